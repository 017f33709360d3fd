#include "api/client.h"

#include <sys/socket.h>
#include <sys/un.h>

#include <cerrno>
#include <cstring>

#include "wire/frame.h"

namespace moat::api {

Result<Client> Client::connect(const std::filesystem::path& socket_path) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return fail(ErrorKind::Internal, "socket: {}", strerror(errno));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  auto path = socket_path.string();
  if (path.size() >= sizeof addr.sun_path) return fail(ErrorKind::InvalidInput, "socket path too long: {}", path);
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    int e = errno;
    if (e == ENOENT || e == ECONNREFUSED) {
      return fail(ErrorKind::Unavailable,
                  "moatd is not running (nothing listens on {}); start it with 'moatd --state-dir {}' or 'make up'",
                  path, socket_path.parent_path().string());
    }
    if (e == EACCES) return fail(ErrorKind::Unavailable, "permission denied on {}: run moat as root", path);
    return fail(ErrorKind::Unavailable, "cannot connect to moatd at {}: {}", path, strerror(e));
  }
  return Client(std::move(fd));
}

Result<Json> Client::call(std::string_view verb, Json args, const ProgressFn& progress) {
  Json req{{"verb", verb}, {"args", std::move(args)}};
  if (auto st = wire::write_frame(fd_.get(), wire::FrameType::ApiRequest, req.dump()); !st)
    return wrap(st.error(), "sending request to moatd");
  for (;;) {
    auto f = wire::read_frame(fd_.get());
    if (!f) return fail(ErrorKind::Unavailable, "moatd closed the connection before answering ({})", f.error().message);
    if (f->type == wire::FrameType::ApiProgress) {
      if (progress) {
        Json p = Json::parse(f->payload, nullptr, false);
        if (!p.is_discarded()) progress(p);
      }
      continue;
    }
    if (f->type == wire::FrameType::ApiResponse) return parse_response(f->payload);
    return fail(ErrorKind::Internal, "moatd sent an unexpected {} frame", wire::frame_type_name(f->type));
  }
}

Result<Json> call(const std::filesystem::path& socket, std::string_view verb, Json args, const ProgressFn& progress) {
  auto c = Client::connect(socket);
  if (!c) return std::unexpected(c.error());
  return c->call(verb, std::move(args), progress);
}

}  // namespace moat::api
