#pragma once
// Streaming checks of a tar archive's member names, fed the decompressed stream chunk by chunk while it is
// hashed and extracted. Understands ustar/GNU/pax headers (prefix field, GNU long names, pax path/linkpath/
// size records). Refuses members whose name or hard-link target is absolute or has a '..' component, and
// anything that is not a tar archive (bad header checksum).
#include <cstdint>
#include <string>
#include <string_view>

#include "base/result.h"

namespace moat::image {

enum class Compression { None, Gzip, Zstd, Xz, Bzip2 };

// Recognises a compressed stream by its first bytes (magic numbers), never by the file name.
Compression detect_compression(std::string_view head);
std::string_view compression_name(Compression c);

class TarChecker {
 public:
  // Consumes the next chunk of the decompressed stream. Fails on the first bad member.
  Status feed(std::string_view chunk);
  // Called at end of stream: fails when the stream held no tar header at all or ended inside a member.
  Status finish() const;

  bool ended() const { return ended_; }  // the end-of-archive marker (two zero blocks) was seen
  uint64_t members() const { return members_; }

 private:
  Status on_header();
  Status check_member(char type, const std::string& name, const std::string& link) const;
  void parse_pax(std::string_view records);

  enum class State { Header, Data, LongName, LongLink, Pax };
  State state_ = State::Header;
  std::string block_;       // partial 512-byte header
  std::string collect_;     // data of a GNU long name / pax record
  uint64_t remaining_ = 0;  // bytes of the current member's data (incl. padding) still to come
  uint64_t collect_size_ = 0;
  uint64_t members_ = 0;
  int zero_blocks_ = 0;
  bool ended_ = false;
  bool seen_header_ = false;
  // Overrides for the next member from GNU 'L'/'K' records or a pax 'x' header.
  std::string next_name_, next_link_;
  bool has_next_size_ = false;
  uint64_t next_size_ = 0;
};

}  // namespace moat::image
