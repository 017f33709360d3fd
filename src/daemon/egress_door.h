#pragma once
// A sandbox's door to the egress gateway, made each time it starts (SandboxObserver): a host-owned
// directory <sandbox>/egress/ holding the gateway's socket for this sandbox and the CA files, mounted
// read-only at /run/moat-gateway; moat-init told to relay 127.0.0.1:3128 there; and the environment
// every process gets (proxy variables, CA bundle variables, base-URL routes, credential placeholders).
#include <filesystem>

#include "config/config.h"
#include "egress/gateway.h"
#include "egress/policy_book.h"
#include "sandbox/manager.h"
#include "vault/vault.h"

namespace moat {

class EgressDoor : public SandboxObserver {
 public:
  EgressDoor(std::filesystem::path state_dir, const EgressConfig& config, egress::Gateway& gateway,
             const egress::PolicyBook& policies, vault::Vault& vault, std::string ca_cert_pem)
      : state_dir_(std::move(state_dir)),
        config_(config),
        gateway_(gateway),
        policies_(policies),
        vault_(vault),
        ca_pem_(std::move(ca_cert_pem)) {}

  Result<SandboxAttachment> attach(const SandboxRecord& rec, const std::filesystem::path& image_root) override;
  void detach(const SandboxRecord& rec) override;

  // Where things are, inside every sandbox.
  static constexpr std::string_view kMountInside = "/run/moat-gateway";
  static constexpr std::string_view kSocketInside = "/run/moat-gateway/gw.sock";
  static constexpr std::string_view kCaInside = "/run/moat-gateway/ca.crt";
  static constexpr std::string_view kBundleInside = "/run/moat-gateway/ca-bundle.crt";
  static constexpr std::string_view kSystemBundle = "/etc/ssl/certs/ca-certificates.crt";

 private:
  std::filesystem::path state_dir_;
  const EgressConfig& config_;
  egress::Gateway& gateway_;
  const egress::PolicyBook& policies_;
  vault::Vault& vault_;
  std::string ca_pem_;
};

}  // namespace moat
