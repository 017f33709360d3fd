#include "egress/gateway.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <future>
#include <map>
#include <thread>

#include <utility>  // before asio: boost 1.74's awaitable.hpp uses std::exchange without including it
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "base/log.h"
#include "egress/gateway_context.h"
#include "egress/policy_book.h"
#include "vault/vault.h"

namespace moat::egress {

namespace asio = boost::asio;
using Acceptor = asio::local::stream_protocol::acceptor;

struct Gateway::Impl {
  explicit Impl(GatewayParts p) : parts(p), audit(p.audit) {}

  GatewayParts parts;
  AuditQueue audit;
  RefusalLedger refusals{RefusalLedger::Limits{}};
  std::unique_ptr<TlsContexts> tls;
  // Declared before the loop so it outlives it: destroying the loop destroys suspended sessions, and
  // a session's destructor still uses the context.
  std::unique_ptr<GatewayContext> ctx;
  asio::io_context io{1};
  asio::executor_work_guard<asio::io_context::executor_type> work{io.get_executor()};
  std::map<std::string, std::shared_ptr<Acceptor>> listeners;  // loop thread only
  std::map<std::string, std::filesystem::path> socket_paths;  // each listener's socket (bound elsewhere, renamed)
  std::thread thread;

  // Runs `fn` on the loop thread and waits for its result: listeners are only touched there.
  template <class F>
  auto on_loop(F fn) -> decltype(fn()) {
    std::packaged_task<decltype(fn())()> task(std::move(fn));
    auto fut = task.get_future();
    asio::post(io, [&task] { task(); });
    return fut.get();
  }

  // The peer of an accepted connection, if `peers` does not admit it: what its refusal says.
  static std::optional<Json> stranger(Acceptor::protocol_type::socket& sock, PeerUids peers) {
    ucred cred{};
    socklen_t len = sizeof cred;
    if (getsockopt(sock.native_handle(), SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0)
      return Json{{"reason", fmt::format("cannot read the peer's credentials: {}", strerror(errno))}};
    if (peers.admits(cred.uid)) return std::nullopt;
    std::error_code ec;
    auto exe = std::filesystem::read_symlink(fmt::format("/proc/{}/exe", cred.pid), ec);
    return Json{{"reason", fmt::format("a connection from host uid {} (pid {}), which is neither root nor this sandbox's",
                                       cred.uid, cred.pid)},
                {"peer_uid", cred.uid}, {"peer_pid", cred.pid}, {"peer_exe", ec ? std::string() : exe.string()}};
  }

  static asio::awaitable<void> accept_loop(GatewayContext& ctx, std::shared_ptr<Acceptor> acceptor, std::string agent,
                                           PeerUids peers) {
    for (;;) {
      boost::system::error_code ec;
      // The sandbox's relay holds at most max_connections, but its root can reach this socket
      // directly: at max_connections + 64 open connections the agent's next one waits in the listen
      // backlog until one closes (back-pressure on that sandbox alone; it also bounds how many of its
      // refusals can be waiting for their answer, and so the refusal debt).
      uint64_t max = ctx.parts.policies.limits_for(agent).max_connections;
      size_t cap = max > 0 ? static_cast<size_t>(std::min<uint64_t>(max, 65536)) + 64 : 4096;
      while (acceptor->is_open() && ctx.sessions[agent] >= cap) {
        asio::steady_timer pause(acceptor->get_executor(), std::chrono::milliseconds(10));
        co_await pause.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      }
      if (!acceptor->is_open()) co_return;
      auto sock = co_await acceptor->async_accept(asio::redirect_error(asio::use_awaitable, ec));
      if (ec == asio::error::operation_aborted || !acceptor->is_open()) co_return;
      if (ec) {
        // EMFILE and friends: back off a little instead of spinning.
        log::warn("egress: accept for {}: {}", agent, ec.message());
        asio::steady_timer t(acceptor->get_executor(), std::chrono::milliseconds(100));
        co_await t.async_wait(asio::redirect_error(asio::use_awaitable, ec));
        continue;
      }
      if (auto refusal = stranger(sock, peers)) {
        log::warn("egress: {}'s gateway socket: refused {}", agent, (*refusal)["reason"].get<std::string>());
        (*refusal)["mode"] = "socket";
        (*refusal)["decision"] = "deny";
        (*refusal)["rule"] = "peer";
        record_refusal(ctx, agent, std::move(*refusal));
        continue;  // closed as `sock` goes
      }
      asio::co_spawn(acceptor->get_executor(), serve_connection(ctx, std::move(sock), agent), asio::detached);
    }
  }

  // Ends each coalescing interval: repeated refusals become one record each.
  static asio::awaitable<void> roll_refusals(GatewayContext& ctx) {
    asio::steady_timer t(ctx.io);
    for (;;) {
      t.expires_after(ctx.refusals.limits().interval);
      boost::system::error_code ec;
      co_await t.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      if (ec) co_return;
      for (auto& e : ctx.refusals.roll(utc_day())) ctx.audit.push(std::move(e));
    }
  }

  // Revocation reaches open connections: each looks at the policy and vault revisions every tick
  // (two atomic loads when nothing moved).
  static constexpr auto kRecheck = std::chrono::milliseconds(250);
  static asio::awaitable<void> recheck_live(GatewayContext& ctx) {
    asio::steady_timer t(ctx.io);
    for (;;) {
      t.expires_after(kRecheck);
      boost::system::error_code ec;
      co_await t.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      if (ec) co_return;
      // A connection may close (and leave the set) while being re-checked: walk a copy.
      std::vector<LiveConnection*> open(ctx.live.begin(), ctx.live.end());
      for (auto* c : open)
        if (ctx.live.count(c)) c->revalidate();
    }
  }

  // The host's own addresses change (DHCP, VPNs); they are refused as destinations, so keep them fresh.
  static asio::awaitable<void> refresh_own_addresses(GatewayContext& ctx) {
    asio::steady_timer t(ctx.io);
    for (;;) {
      t.expires_after(std::chrono::minutes(1));
      boost::system::error_code ec;
      co_await t.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      if (ec) co_return;
      ctx.own_addresses = net::host_own_addresses();
    }
  }
};

void record_refusal(GatewayContext& ctx, const std::string& agent, Json refusal) {
  for (auto& e : ctx.refusals.note(agent, std::move(refusal), std::chrono::steady_clock::now(), utc_day()))
    ctx.audit.push(std::move(e));
}

Gateway::Gateway(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Result<std::unique_ptr<Gateway>> Gateway::start(GatewayParts parts) {
  auto impl = std::make_unique<Impl>(parts);
  auto tls = TlsContexts::create(parts.config.upstream_ca_file, parts.ca);
  if (!tls) return std::unexpected(tls.error());
  impl->tls = std::move(*tls);
  impl->ctx.reset(new GatewayContext{impl->io, parts, *impl->tls, impl->audit, impl->refusals, net::host_own_addresses()});
  asio::co_spawn(impl->io, Impl::refresh_own_addresses(*impl->ctx), asio::detached);
  asio::co_spawn(impl->io, Impl::roll_refusals(*impl->ctx), asio::detached);
  asio::co_spawn(impl->io, Impl::recheck_live(*impl->ctx), asio::detached);
  impl->thread = std::thread([io = &impl->io] {
    for (;;) {
      try {
        io->run();
        return;
      } catch (const std::exception& e) {
        // A bug in one connection must not take every sandbox's network down: log it and go on.
        log::error("egress: a connection failed unexpectedly: {}", e.what());
      }
    }
  });
  return std::unique_ptr<Gateway>(new Gateway(std::move(impl)));
}

Gateway::~Gateway() {
  if (!impl_) return;
  impl_->on_loop([this] {
    for (auto& [agent, acc] : impl_->listeners) {
      boost::system::error_code ignore;
      acc->close(ignore);
    }
    impl_->listeners.clear();
    // Repeats counted in the unfinished interval are recorded too.
    for (auto& e : impl_->refusals.roll(utc_day(), true)) impl_->audit.push(std::move(e));
    return 0;
  });
  impl_->work.reset();
  impl_->io.stop();
  impl_->thread.join();
  impl_->audit.flush();
}

Status Gateway::attach(const std::string& agent, const std::filesystem::path& socket_path, PeerUids peers) {
  return impl_->on_loop([&]() -> Status {
    if (auto it = impl_->listeners.find(agent); it != impl_->listeners.end()) {
      boost::system::error_code ignore;
      it->second->close(ignore);
      impl_->listeners.erase(it);
    }
    // The directory is host-owned and only mounted (read-only) into the sandbox, so names in it cannot
    // be redirected by the agent. The socket is bound under a temporary name, given its owner and mode,
    // and renamed over the old one: at its final name it never has another mode.
    struct stat st {};
    if (lstat(socket_path.c_str(), &st) == 0 && !S_ISSOCK(st.st_mode))
      return fail(ErrorKind::Conflict, "'{}' exists and is not a socket; remove it and start the sandbox again", socket_path.string());
    auto fresh = socket_path;
    fresh += ".new";
    unlink(fresh.c_str());
    auto acc = std::make_shared<Acceptor>(impl_->io);
    boost::system::error_code ec;
    asio::local::stream_protocol::endpoint ep(fresh.string());
    acc->open(ep.protocol(), ec);
    if (!ec) acc->bind(ep, ec);
    if (!ec) acc->listen(1024, ec);
    if (ec) return fail(ErrorKind::Internal, "cannot listen on the gateway socket '{}': {}", socket_path.string(), ec.message());
    if (chown(fresh.c_str(), 0, peers.first) != 0 || chmod(fresh.c_str(), 0660) != 0 || rename(fresh.c_str(), socket_path.c_str()) != 0) {
      int e = errno;
      unlink(fresh.c_str());
      return fail(ErrorKind::Internal, "cannot put the gateway socket in place at '{}': {}", socket_path.string(), strerror(e));
    }
    impl_->listeners[agent] = acc;
    impl_->socket_paths[agent] = socket_path;
    asio::co_spawn(impl_->io, Impl::accept_loop(*impl_->ctx, acc, agent, peers), asio::detached);
    return {};
  });
}

void Gateway::detach(const std::string& agent) {
  impl_->on_loop([&] {
    if (auto it = impl_->listeners.find(agent); it != impl_->listeners.end()) {
      boost::system::error_code ignore;
      it->second->close(ignore);
      impl_->listeners.erase(it);
      if (auto p = impl_->socket_paths.extract(agent)) unlink(p.mapped().c_str());
    }
    return 0;
  });
}

void Gateway::flush_audit() { impl_->audit.flush(); }

}  // namespace moat::egress
