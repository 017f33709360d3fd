#include "daemon/egress_door.h"

#include <fcntl.h>
#include <sys/stat.h>

#include "base/fs.h"
#include "sandbox/layout.h"

namespace moat {
namespace {

// The image's own CA bundle (the image is immutable and host-owned, so reading it follows nothing the
// agent controls); empty when the image has none or it is not a regular file.
std::string image_bundle(const std::filesystem::path& image_root) {
  auto path = image_root / std::string(EgressDoor::kSystemBundle).substr(1);
  struct stat st {};
  if (lstat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return {};
  auto text = read_file(path);
  return text ? *text : std::string();
}

}  // namespace

Result<SandboxAttachment> EgressDoor::attach(const SandboxRecord& rec, const std::filesystem::path& image_root) {
  auto dir = SandboxPaths::for_sandbox(state_dir_, rec.name).dir / "egress";
  if (auto st = make_dirs(dir, 0755); !st) return std::unexpected(st.error());
  std::string system = image_bundle(image_root);
  std::string bundle = system;
  if (!bundle.empty() && !bundle.ends_with('\n')) bundle += '\n';
  bundle += ca_pem_;
  // Written only when they differ from what is there: a synced write at every start costs a few
  // milliseconds of cold start, and the files change only with the CA or the image.
  for (auto& [name, text] : {std::pair{"ca.crt", &ca_pem_}, std::pair{"ca-bundle.crt", &bundle}}) {
    if (auto cur = read_file(dir / name); cur && *cur == *text) continue;
    if (auto st = write_file_atomic(dir / name, *text, 0644); !st) return std::unexpected(st.error());
  }
  if (auto st = gateway_.attach(rec.name, dir / "gw.sock",
                                 egress::PeerUids{static_cast<uint32_t>(rec.uid_base), static_cast<uint32_t>(kUidRangeSize)}); !st) return std::unexpected(st.error());

  SandboxAttachment a;
  a.init_args = {"--proxy-to", std::string(kSocketInside)};
  // The relay opens no more connections into moatd than the gateway would let the agent keep open
  // (taken at start: a changed limit reaches the relay at the sandbox's next start).
  if (auto max = policies_.limits_for(rec.name).max_connections; max > 0)
    a.init_args.insert(a.init_args.end(), {"--proxy-max-connections", std::to_string(std::min<uint64_t>(max, 65536))});
  a.mounts.push_back({std::string(kMountInside), dir.string(), "bind", {"ro", "nosuid", "nodev", "noexec"}});
  // Tools that read the system store (curl, git, apt, OpenSSL's default) trust the moat CA too.
  if (!system.empty()) a.mounts.push_back({std::string(kSystemBundle), (dir / "ca-bundle.crt").string(), "bind", {"ro", "nosuid", "nodev", "noexec"}});
  std::string proxy(egress::kProxyUrl);
  for (const char* k : {"HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"})
    a.env.push_back(fmt::format("{}={}", k, proxy));
  for (const char* k : {"NO_PROXY", "no_proxy"}) a.env.push_back(fmt::format("{}=localhost,127.0.0.1,::1", k));
  a.env.push_back(fmt::format("SSL_CERT_FILE={}", kBundleInside));
  a.env.push_back(fmt::format("REQUESTS_CA_BUNDLE={}", kBundleInside));
  a.env.push_back(fmt::format("CURL_CA_BUNDLE={}", kBundleInside));
  a.env.push_back(fmt::format("GIT_SSL_CAINFO={}", kBundleInside));
  a.env.push_back(fmt::format("NODE_EXTRA_CA_CERTS={}", kCaInside));
  for (const auto& [name, route] : config_.routes) {
    if (!route.env.empty()) a.env.push_back(fmt::format("{}={}/{}", route.env, proxy, name));
  }
  for (const auto& [var, placeholder] : vault_.placeholders_for(rec.name)) a.env.push_back(fmt::format("{}={}", var, placeholder));
  return a;
}

void EgressDoor::detach(const SandboxRecord& rec) { gateway_.detach(rec.name); }

}  // namespace moat
