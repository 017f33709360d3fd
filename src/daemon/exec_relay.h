#pragma once
// Relays one exec conversation between a CLI connection and moat-init, frame by frame, so moatd sees
// (and audits) the outcome without interpreting the stream.
#include "sandbox/manager.h"

namespace moat {

// Returns when the exec ends (Exit relayed) or either side goes away.
ExecRecord relay_exec(int client_fd, int guest_fd);

}  // namespace moat
