// moat-flood: the hostile agent's refusal flood. From inside a sandbox it sends TOTAL requests that
// the gateway refuses (plain HTTP to a reserved documentation address, 192.0.2.1), as fast as it can,
// over WORKERS connections at a time, each request on a fresh connection (the gateway closes the
// connection after a refusal) and, to try pipelining anyway, a second request written behind the
// first. It prints one line: "sent N refused R unanswered U other O closed C seconds S" (refused: a
// 403; unanswered: closed without a word; other: anything else, or a second answer; closed: no connection).
//   moat-flood TOTAL WORKERS
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct Counts {
  long sent, refused, unanswered, other, closed;
};

static const char kRequest[] = "GET http://192.0.2.1/ HTTP/1.1\r\nHost: 192.0.2.1\r\n\r\n";

static void one(struct Counts* c) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(3128)};
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  if (fd < 0 || connect(fd, (struct sockaddr*)&a, sizeof a) != 0) {
    if (fd >= 0) close(fd);
    __atomic_add_fetch(&c->closed, 1, __ATOMIC_RELAXED);
    return;
  }
  char pipelined[2 * sizeof kRequest];
  snprintf(pipelined, sizeof pipelined, "%s%s", kRequest, kRequest);
  if (write(fd, pipelined, strlen(pipelined)) < 0) {
    close(fd);
    __atomic_add_fetch(&c->closed, 1, __ATOMIC_RELAXED);
    return;
  }
  __atomic_add_fetch(&c->sent, 1, __ATOMIC_RELAXED);
  char buf[4096];
  size_t got = 0;
  for (;;) {
    ssize_t n = read(fd, buf + got, sizeof buf - 1 - got);
    if (n <= 0) break;
    got += (size_t)n;
    if (got >= sizeof buf - 1) break;
  }
  buf[got] = 0;
  close(fd);
  if (strncmp(buf, "HTTP/1.1 403", 12) == 0)
    __atomic_add_fetch(&c->refused, 1, __ATOMIC_RELAXED);
  else if (got == 0)  // closed without an answer: the gateway's refusal past its rate
    __atomic_add_fetch(&c->unanswered, 1, __ATOMIC_RELAXED);
  else
    __atomic_add_fetch(&c->other, 1, __ATOMIC_RELAXED);
  // A second answer on the same connection would mean the pipelined request was served too.
  if (strstr(buf + 12, "HTTP/1.1 ")) __atomic_add_fetch(&c->other, 1, __ATOMIC_RELAXED);
}

int main(int argc, char** argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: moat-flood TOTAL WORKERS\n");
    return 2;
  }
  long total = atol(argv[1]);
  int workers = atoi(argv[2]);
  struct Counts* c = mmap(NULL, sizeof *c, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (int w = 0; w < workers; ++w) {
    if (fork() == 0) {
      for (long i = w; i < total; i += workers) one(c);
      _exit(0);
    }
  }
  while (wait(NULL) > 0) {
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  printf("sent %ld refused %ld unanswered %ld other %ld closed %ld seconds %.2f\n", c->sent, c->refused, c->unanswered,
         c->other, c->closed,
         (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
  return 0;
}
