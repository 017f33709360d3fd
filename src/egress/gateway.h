#pragma once
// The egress gateway: the only door out of every sandbox. It runs inside moatd on one event loop
// (one thread, no thread per connection) and listens on one unix socket per sandbox; which socket a
// connection arrived on is the agent's identity — nothing the agent says is trusted for that.
//
// It speaks HTTP CONNECT (tunnels, with the TLS ClientHello's SNI checked against the CONNECT host),
// plain absolute-URI HTTP forwarding with keep-alive, and base-URL routes (/<route>/... forwarded over
// TLS with the agent's bound credentials set). For destinations that have a credential binding it
// intercepts TLS with the installation's CA and swaps placeholders for the real values in request
// headers. It resolves names itself and connects to the exact address it checked. Every upstream
// connection is an audit event.
#include <filesystem>
#include <memory>
#include <string>

#include "audit/audit_log.h"
#include "base/result.h"
#include "config/config.h"

namespace moat::vault {
class Vault;
}

namespace moat::egress {

class PolicyBook;
class UsageMeter;
class CertAuthority;

struct GatewayParts {
  const EgressConfig& config;
  PolicyBook& policies;
  UsageMeter& usage;
  vault::Vault& vault;
  CertAuthority& ca;
  AuditLog& audit;
};

// Who may connect to a sandbox's gateway socket: root, and the host uids of the sandbox's own range
// (its root is `first`). Anyone else on the host is refused at accept and the refusal audited.
struct PeerUids {
  uint32_t first = 0;
  uint32_t count = 0;
  bool admits(uint32_t uid) const { return uid == 0 || (count > 0 && uid >= first && uid - first < count); }
};

class Gateway {
 public:
  // Starts the event loop thread. Fails when the upstream trust store or CA file cannot be loaded.
  static Result<std::unique_ptr<Gateway>> start(GatewayParts parts);
  ~Gateway();  // stops the loop; open connections are closed; audit records are flushed

  // Listens for `agent` on `socket_path`, in a host-owned directory that only that sandbox mounts and
  // that no other host user may enter (see make_fenced_dir). The socket appears with its final owner
  // and mode (root:peers.first 0660: the sandbox's root may connect) by a rename, and a stale one is
  // replaced the same way. Connections from a uid `peers` does not admit are refused. Idempotent.
  Status attach(const std::string& agent, const std::filesystem::path& socket_path, PeerUids peers);
  // Stops listening for `agent` and removes its socket; connections already open finish.
  void detach(const std::string& agent);

  // Makes every pending audit record durable (tests and shutdown).
  void flush_audit();

 private:
  struct Impl;
  explicit Gateway(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The port the proxy listens on inside every sandbox, and the URL processes there use.
inline constexpr uint16_t kProxyPort = 3128;
inline constexpr std::string_view kProxyUrl = "http://127.0.0.1:3128";

}  // namespace moat::egress
