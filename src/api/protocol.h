#pragma once
// The control API between the moat CLI and moatd: the same framing as the host <-> moat-init protocol
// (wire/frame.h) on moatd's unix socket (mode 0600), with three frame types of its own:
//
//   client -> ApiRequest  {"verb": "sandbox.create", "args": {...}}
//   server -> ApiProgress {"line": "..."}            zero or more (progress of long work, exported lines)
//   server -> ApiResponse {"ok": true, "result": ...}  or  {"ok": false, "error": {"kind":..., "message":...}}
//
// One request per connection. For the streaming verb "exec", a successful ApiResponse is followed by
// the exec conversation of wire/frame.h relayed verbatim between the CLI and moat-init
// (Stdin/StdinEof/Resize/Signal from the client; Stdout/Stderr/Exit from the sandbox).
#include <string>

#include "base/json.h"
#include "base/result.h"

namespace moat::api {

Json ok_response(Json result);
Json error_response(const Error& e);
// Turns an ApiResponse payload into the result or the Error it carries.
Result<Json> parse_response(std::string_view payload);

}  // namespace moat::api
