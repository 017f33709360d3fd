#pragma once
// exec: starts the requested command (pipes or a PTY), streams its output to the host with backpressure,
// relays stdin/resize/signals, enforces the timeout, and ends with an Exit frame. Runs in the
// per-connection process, which is a child subreaper: everything the command starts is its descendant,
// so a timeout, Signal{SIGKILL} or a vanished host kills the whole tree.
#include "base/unique_fd.h"
#include "wire/messages.h"

namespace moat::guest {

void run_exec(UniqueFd conn, const wire::ExecStart& req);

// Records which signals moat-init ignores or handles, once, after it has set its dispositions: the only
// ones a command's child must reset. Processes forked later inherit the record; without it every signal
// is reset.
void note_signal_dispositions();

}  // namespace moat::guest
