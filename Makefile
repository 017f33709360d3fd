# moat's front door. `make up` sets up and starts moat; `make test` runs the whole suite.
BUILD ?= build
JOBS ?= $(shell nproc)
STATE_DIR ?= /var/lib/moat

# cmake's progress lines ("[ 42%] Building ...") are the progress output of a long build; the
# sub-make's "Entering directory" chatter is not.
CMAKE_BUILD = env -u MAKEFLAGS -u MAKELEVEL cmake --build $(BUILD) -j $(JOBS)

.PHONY: deps configure build build-daemon up down test test-long bench fuzz fmt clean

deps:
	@scripts/install-deps

configure: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null

# Everything: the daemon, the CLI, moat-init, tests and benchmarks.
build: configure
	@$(CMAKE_BUILD)

# Only what `make up` runs.
build-daemon: configure
	@$(CMAKE_BUILD) --target moatd moat-cli moat-init

up: build-daemon
	@scripts/up $(BUILD) $(STATE_DIR)

down:
	@$(BUILD)/moat daemon stop 2>/dev/null || true

test: build
	@scripts/run-tests $(BUILD)

# Seeded SIGKILL crash iterations of moatd (50; MOAT_CRASH_ITERATIONS and MOAT_CRASH_SEED override).
test-long: build
	@scripts/test-long $(BUILD)

bench: build
	@scripts/run-bench $(BUILD)

# Each libFuzzer target for FUZZ_SECONDS (make test only replays the checked-in corpus).
FUZZ_SECONDS ?= 120
fuzz: deps
	@scripts/fuzz run $(FUZZ_SECONDS) $(BUILD)

fmt:
	@clang-format -i $$(git ls-files 'src/*.cpp' 'src/*.h' 'tests/*.cpp' 'tests/*.h' 'bench/*.cpp' 'fuzz/*.cpp')

clean:
	rm -rf $(BUILD)
