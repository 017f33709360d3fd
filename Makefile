# moat's front door. `make up` sets up and starts moat; `make test` runs the whole suite.
BUILD ?= build
JOBS ?= $(shell nproc)
STATE_DIR ?= /var/lib/moat

.PHONY: deps build up down test test-unit bench fmt clean

deps:
	@scripts/install-deps

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(BUILD) -j $(JOBS) 2>&1 | grep -Ev '^\[ *[0-9]+%\]|^-- ' || true
	@test -x $(BUILD)/moatd && test -x $(BUILD)/moat && test -x $(BUILD)/moat-init

up: build
	@scripts/up $(BUILD) $(STATE_DIR)

down:
	@$(BUILD)/moat daemon stop 2>/dev/null || true

test: build
	@scripts/run-tests $(BUILD)

bench: build
	@scripts/run-bench $(BUILD)

fmt:
	@clang-format -i $$(git ls-files 'src/*.cpp' 'src/*.h' 'tests/*.cpp' 'tests/*.h' 'bench/*.cpp')

clean:
	rm -rf $(BUILD)
