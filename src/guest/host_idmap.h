#pragma once
// moat-init's second job, on the host: standing in for shadow's newuidmap/newgidmap when moatd starts a
// gVisor sandbox. Not used inside sandboxes.
//
// Why: Debian's runsc (20221219) runs its Sentry as host uid 65534 unless its real uid is not root, so
// every local `nobody` could signal every gVisor sandbox. moatd therefore starts `runsc run` with its
// real ids set to the sandbox's own nobody (uid_base + 65534) and its effective ids root: runsc then maps
// the Sentry to that id, and takes its "rootless" path for the gofer, which calls `newuidmap PID 0
// BASE COUNT` to map the gofer's user namespace. Shadow's newuidmap refuses (the real uid has no name
// and no /etc/subuid entry), so moatd puts this binary first in runsc's PATH under those two names.
//
// It is not setuid: it can only do what its caller (runsc, effective root) could do itself. It writes
// the mapping it is given into /proc/PID/{uid,gid}_map, and only when every host range lies inside the
// range moatd names in MOAT_IDMAP_UID_RANGE / MOAT_IDMAP_GID_RANGE ("FIRST:COUNT", the sandbox's own).
namespace moat::guest {

enum class IdMapKind { Uid, Gid };

// argv as newuidmap takes it: PID (INSIDE OUTSIDE COUNT)...; 0 when the mapping was written, else 1
// with one line on stderr naming what was wrong.
int run_host_idmap(IdMapKind kind, int argc, char** argv);

}  // namespace moat::guest
