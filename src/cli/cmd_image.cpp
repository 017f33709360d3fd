// moat image build|import|ls|rm
#include <unistd.h>

#include <cstdio>
#include <filesystem>

#include "cli/cli.h"
#include "config/units.h"

namespace moat::cli {

namespace {
void print_image(const Globals& g, const Json& r) {
  if (g.json) std::printf("%s\n", r.dump(2).c_str());
  else std::printf("%s %s\n", r["name"].get<std::string>().c_str(), r["digest"].get<std::string>().c_str());
}
}  // namespace

void add_image_commands(CLI::App& app, Globals& g, int& rc) {
  auto* img = app.add_subcommand("image", "manage images: immutable, content-addressed root file systems");
  img->require_subcommand(1);

  auto* build = img->add_subcommand("build", "build the default image: minimal Debian bookworm via mmdebstrap");
  auto bname = std::make_shared<std::string>("default");
  build->add_option("name", *bname, "image name (default 'default')");
  build->callback([&g, &rc, bname] {
    auto r = call_or_report(g, "image.build", Json{{"name", *bname}}, rc);
    if (!r) return;
    print_image(g, *r);
  });

  auto* import = img->add_subcommand("import", "import a root file system tarball (.tar, .tar.gz, .tar.zst)");
  auto iname = std::make_shared<std::string>();
  auto ipath = std::make_shared<std::string>();
  import->add_option("name", *iname, "image name")->required();
  import->add_option("tarball", *ipath, "path to the tarball")->required()->check(CLI::ExistingFile);
  import->callback([&g, &rc, iname, ipath] {
    auto abs = std::filesystem::absolute(*ipath).string();
    auto r = call_or_report(g, "image.import", Json{{"name", *iname}, {"path", abs}}, rc);
    if (!r) return;
    print_image(g, *r);
  });

  auto* ls = img->add_subcommand("ls", "list images");
  ls->callback([&g, &rc] {
    auto r = call_or_report(g, "image.ls", Json::object(), rc);
    if (!r) return;
    if (g.json) {
      std::printf("%s\n", r->dump(2).c_str());
      return;
    }
    std::vector<std::vector<std::string>> rows{{"NAME", "DIGEST", "SIZE", "CREATED"}};
    for (auto& i : *r) {
      std::string digest = i["digest"];
      rows.push_back({i["name"], digest.substr(0, 19), format_size(i["size_bytes"].get<uint64_t>()), i["created_at"]});
    }
    print_table(rows);
  });

  auto* rm = img->add_subcommand("rm", "remove an image (refused while a sandbox uses it)");
  auto rname = std::make_shared<std::string>();
  rm->add_option("name", *rname, "image name")->required();
  rm->callback([&g, &rc, rname] {
    auto r = call_or_report(g, "image.rm", Json{{"name", *rname}}, rc);
    if (!r) return;
    if (g.json) std::printf("%s\n", r->dump(2).c_str());
    else std::printf("%s removed\n", rname->c_str());
  });
}

}  // namespace moat::cli
