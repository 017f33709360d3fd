// moat cp: copy a file into or out of a sandbox (moat cp ./f NAME:/path, moat cp NAME:/path ./f).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>

#include "base/fs.h"
#include "cli/cli.h"
#include "wire/frame.h"

namespace moat::cli {
namespace {

struct Endpoint {
  std::string sandbox;  // empty = local
  std::string path;
};

Endpoint parse_endpoint(const std::string& s) {
  auto colon = s.find(':');
  // A local path containing ':' must be written with a '/' before it (./a:b).
  if (colon == std::string::npos || s.find('/') < colon) return {"", s};
  return {s.substr(0, colon), s.substr(colon + 1)};
}

int copy_in(const Globals& g, const std::string& local, const Endpoint& dst) {
  auto data = local == "-" ? Result<std::string>(std::string()) : read_file(local);
  if (local == "-") {
    char buf[65536];
    ssize_t n;
    while ((n = read(STDIN_FILENO, buf, sizeof buf)) > 0) data->append(buf, n);
  }
  if (!data) return report(data.error());
  auto client = api::Client::connect(g.socket_path());
  if (!client) return report(client.error());
  // Keep the local file's permission bits (an executable stays executable).
  uint32_t mode = 0644;
  if (struct stat st {}; local != "-" && ::stat(local.c_str(), &st) == 0) mode = st.st_mode & 07777;
  auto r = client->call("file.put",
                        Json{{"name", dst.sandbox}, {"path", dst.path}, {"size", data->size()}, {"mode", mode}});
  if (!r) return report(r.error());
  std::string_view rest = *data;
  while (!rest.empty()) {
    auto chunk = rest.substr(0, wire::kMaxChunk);
    if (!wire::write_frame(client->fd(), wire::FrameType::FileData, chunk)) break;
    rest.remove_prefix(chunk.size());
  }
  (void)wire::write_frame(client->fd(), wire::FrameType::FileEnd);
  auto f = wire::read_frame(client->fd());
  if (!f) return report(Error{ErrorKind::Unavailable, "moatd closed the connection during the copy"});
  auto done = api::parse_response(f->payload);
  if (!done) return report(done.error());
  return 0;
}

int copy_out(const Globals& g, const Endpoint& src, const std::string& local) {
  auto client = api::Client::connect(g.socket_path());
  if (!client) return report(client.error());
  std::string data;
  Json req{{"verb", "file.get"}, {"args", {{"name", src.sandbox}, {"path", src.path}}}};
  if (auto st = wire::write_frame(client->fd(), wire::FrameType::ApiRequest, req.dump()); !st) return report(st.error());
  for (;;) {
    auto f = wire::read_frame(client->fd());
    if (!f) return report(Error{ErrorKind::Unavailable, "moatd closed the connection during the copy"});
    if (f->type == wire::FrameType::FileData) {
      data += f->payload;
      continue;
    }
    auto r = api::parse_response(f->payload);
    if (!r) return report(r.error());
    break;
  }
  if (local == "-") {
    fwrite(data.data(), 1, data.size(), stdout);
    return 0;
  }
  if (auto st = write_file_atomic(local, data, 0644); !st) return report(st.error());
  return 0;
}

}  // namespace

void add_cp_command(CLI::App& app, Globals& g, int& rc) {
  auto* cp = app.add_subcommand("cp", "copy a file into or out of a sandbox: moat cp SRC NAME:/path | moat cp NAME:/path DST ('-' = stdin/stdout)");
  auto src = std::make_shared<std::string>();
  auto dst = std::make_shared<std::string>();
  cp->add_option("src", *src, "local path or NAME:/path")->required();
  cp->add_option("dst", *dst, "local path or NAME:/path")->required();
  cp->callback([&g, &rc, src, dst] {
    auto s = parse_endpoint(*src), d = parse_endpoint(*dst);
    if (s.sandbox.empty() == d.sandbox.empty()) {
      rc = report(Error{ErrorKind::InvalidInput, "exactly one of SRC and DST must be NAME:/path"});
      return;
    }
    rc = d.sandbox.empty() ? copy_out(g, s, d.path) : copy_in(g, s.path, d);
  });
}

}  // namespace moat::cli
