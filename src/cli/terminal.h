#pragma once
// Puts the local terminal in raw mode for `moat shell` and restores it on scope exit.
#include <termios.h>

namespace moat::cli {

class RawTerminal {
 public:
  explicit RawTerminal(int fd);
  ~RawTerminal();
  RawTerminal(const RawTerminal&) = delete;
  RawTerminal& operator=(const RawTerminal&) = delete;

 private:
  int fd_;
  bool active_ = false;
  termios saved_{};
};

// Rows and columns of the terminal on `fd`, or 24x80 when it is not one.
void terminal_size(int fd, unsigned short& rows, unsigned short& cols);

}  // namespace moat::cli
