# The two commands of the README: `make demo` and `make test`.
# Each installs missing Debian packages, configures and builds what is missing.
BUILD_DIR ?= build
JOBS ?= $(shell nproc)

.PHONY: all deps build test demo bench clean

all: build

deps:
	@scripts/install-deps

$(BUILD_DIR)/build.ninja: | deps
	cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo

build: deps $(BUILD_DIR)/build.ninja
	cmake --build $(BUILD_DIR) -j $(JOBS)

test: build
	cd $(BUILD_DIR) && ctest -j $(JOBS) --output-on-failure

demo: build
	scripts/demo

bench: build
	bench/copy; s=$$?; bench/vma_pass --bin-dir $(BUILD_DIR)/bin && exit $$s

clean:
	rm -rf $(BUILD_DIR)
