#pragma once
// Internal to the gateway: what its connections share, and the coroutine that serves one. Everything
// here is used on the gateway's event-loop thread only.
#include <utility>  // before asio: boost 1.74's awaitable.hpp uses std::exchange without including it
#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>

#include <map>
#include <set>

#include "net/address.h"
#include "egress/audit_queue.h"
#include "egress/gateway.h"
#include "egress/refusal_ledger.h"
#include "egress/tls_contexts.h"

namespace moat::egress {

// An open connection that holds what policy or the vault granted (upstream connections, credentials):
// re-checked at every tick of the gateway, so a revocation reaches it within one. Each connection
// keeps the policy and vault revisions it was last checked against, so a change made while it was
// being decided is not missed, and one made before it opened does not touch it.
class LiveConnection {
 public:
  virtual ~LiveConnection() = default;
  // Closes what policy no longer allows and what carries changed credentials, if either revision
  // moved since this connection last looked.
  virtual void revalidate() = 0;
};

struct GatewayContext {
  boost::asio::io_context& io;
  GatewayParts parts;
  TlsContexts& tls;
  AuditQueue& audit;
  RefusalLedger& refusals;
  std::vector<net::IpAddress> own_addresses;  // refreshed by the gateway every minute
  std::set<LiveConnection*> live;         // every open connection
  std::map<std::string, size_t> sessions;  // open connections per agent (capped at accept)
};

// Records a refusal by `agent` (an egress record's data with "decision": "deny") through the ledger:
// coalesced, capped, never one durable row per attempt.
void record_refusal(GatewayContext& ctx, const std::string& agent, Json refusal);

// Serves one connection from `agent`'s sandbox until it closes.
boost::asio::awaitable<void> serve_connection(GatewayContext& ctx, boost::asio::local::stream_protocol::socket client,
                                              std::string agent);

}  // namespace moat::egress
