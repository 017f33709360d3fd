#pragma once
// File put/get, done by moat-init inside the sandbox so the host never resolves a path the agent controls.
#include "wire/messages.h"

namespace moat::guest {

// Receives FileData* + FileEnd from `conn` and writes them atomically (temp file + rename in the target's
// directory); answers Ok or Error.
void serve_file_put(int conn, const wire::FilePut& req);
// Answers FileInfo, FileData*, FileEnd, or Error.
void serve_file_get(int conn, const wire::FileGet& req);

}  // namespace moat::guest
