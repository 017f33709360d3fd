#pragma once
// Waiting on a condition with a deadline, for conditions nothing signals (another process's or thread's
// writes: the gateway's audit writer, moatd's checkpointer): a test waits on the condition itself,
// never on a bare sleep. The one polling loop the tests share.
#include <chrono>
#include <thread>

namespace moat::testing {

// Polls `condition` every `every` until it holds or `timeout` passes; whether it held.
template <class Condition>
bool wait_until(Condition condition, std::chrono::milliseconds timeout,
                std::chrono::milliseconds every = std::chrono::milliseconds(20)) {
  auto end = std::chrono::steady_clock::now() + timeout;
  while (!condition()) {
    if (std::chrono::steady_clock::now() >= end) return condition();
    std::this_thread::sleep_for(every);
  }
  return true;
}

}  // namespace moat::testing
