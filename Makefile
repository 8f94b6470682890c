# NFS -> Azure Blob uploader. `make run` and `make test` work on a fresh Debian 12 machine.
SHELL := /bin/bash
.DEFAULT_GOAL := help

JOBS        ?= $(shell nproc)
BUILD_DIR   ?= build
ASAN_DIR    ?= build-asan
TSAN_DIR    ?= build-tsan
COV_DIR     ?= build-cov
BIN         := $(BUILD_DIR)/bin/nfs-blob-uploader
API         ?=
GEN_API     ?= http://127.0.0.1:$(or $(GEN_HTTP_PORT),8080)
SESSION     ?= demo
INTERVAL    ?= 2
SIZE        ?= 65536
COUNT       ?= 10
AZURITE_PORT ?= 10000
RUN_DIR     := .run
CMAKE_FLAGS ?=

SOURCES := $(shell git ls-files '*.cpp' '*.h' '*.c' 2>/dev/null)

# Targets in order even under make -j (MAKEFLAGS=-j in the environment, say): the installs
# before the configure, two npm ci or apt-get runs never at once. The builds are parallel inside.
.NOTPARALLEL:

.PHONY: help install install-bench coverage build build-bin build-asan build-tsan run test test-release test-memory test-unit test-asan test-tsan skipped-tests lint format \
        format-check typecheck clean dev-up dev-down watch-start watch-stop test-status gen-start \
        gen-stop bench bench-micro bench-smoke docker-build docker-up docker-down k3s-apply k3s-delete shellcheck

help: ## List the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

install: ## Install Debian and npm dependencies (idempotent)
	@./scripts/install-deps.sh

install-bench: ## What install does, and nginx for make bench's fast sink (its default site not left running)
	@./scripts/install-deps.sh --bench

$(BUILD_DIR)/CMakeCache.txt:
	cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS)

build: $(BUILD_DIR)/CMakeCache.txt ## Release build of everything, the tests too, in build/
	cmake --build $(BUILD_DIR) -j $(JOBS)

build-bin: $(BUILD_DIR)/CMakeCache.txt ## Release build of the binaries only: build/bin/nfs-blob-uploader, build/bin/nfs-testgen
	cmake --build $(BUILD_DIR) -j $(JOBS) --target nfs-blob-uploader nfs-testgen

# The sanitizer trees carry line tables only (-g1): a report still names file and line, and the
# build takes about 9 % less time than with full debug information.
build-asan: ## AddressSanitizer + UndefinedBehaviorSanitizer build in build-asan/
	cmake -S . -B $(ASAN_DIR) -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG=-g1 \
	  -DNBU_SANITIZE=address,undefined $(CMAKE_FLAGS)
	cmake --build $(ASAN_DIR) -j $(JOBS)

build-tsan: ## ThreadSanitizer build of the concurrency tests in build-tsan/
	cmake -S . -B $(TSAN_DIR) -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO='-O2 -g1 -DNDEBUG' -DNBU_SANITIZE=thread $(CMAKE_FLAGS)
	cmake --build $(TSAN_DIR) -j $(JOBS) --target nbu_concurrency_tests

run: install build-bin dev-up ## Build, start Azurite in the background and the service in the foreground
	@mkdir -p data/nfs/incoming data/nfs/.processing data/staging
	@[ -f .env ] || cp .env.example .env
	$(BIN)

# Every test runs under ASan+UBSan; the release build's own run of them (test-release) would repeat
# it at -O3 and add about 6 minutes to CI on 2 cores. The release binaries are still built and
# run end to end by the bench smoke run, and the one test a sanitizer skips (resident memory,
# which under a sanitizer is the sanitizer's) runs on the release build.
test: install build-bin ## Install, build, run every test under ASan+UBSan, the concurrency tests under TSan, the memory test and the bench smoke run on the release build, format and shellcheck
	$(MAKE) test-asan
	$(MAKE) test-tsan
	$(MAKE) test-memory
	$(MAKE) bench-smoke
	$(MAKE) lint-check

test-release: build ## Every test on the release build (-O3 libraries); make test runs them under ASan+UBSan instead
	cd $(BUILD_DIR) && ctest --output-on-failure -j 2

test-memory: build-bin ## The service's resident memory over many files and large ones (release build)
	cmake --build $(BUILD_DIR) -j $(JOBS) --target uploader_e2e_test
	cd $(BUILD_DIR) && GTEST_FILTER='UploaderE2E.MemoryGrows*' ctest --output-on-failure -V \
	  -R '^uploader_e2e_test$$' > memory-test.log 2>&1 || { cat memory-test.log; exit 1; }
	@# A filter that matches nothing (the test renamed) runs no test and passes: not here.
	grep -E '\[  PASSED  \] 1 test\.' $(BUILD_DIR)/memory-test.log || \
	  { cat $(BUILD_DIR)/memory-test.log; echo "test-memory: the memory test did not run"; exit 1; }

test-unit: build ## Unit tests only (fast)
	cd $(BUILD_DIR) && ctest --output-on-failure -L unit -j $(JOBS)

test-asan: build-asan ## Unit, integration and e2e tests (the service binary too) under ASan+UBSan
	cd $(ASAN_DIR) && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
	  ctest --output-on-failure -L 'unit|integration|e2e' -j 2
	@$(MAKE) --no-print-directory skipped-tests DIR=$(ASAN_DIR)

test-tsan: build-tsan ## Concurrency tests under ThreadSanitizer
	cd $(TSAN_DIR) && TSAN_OPTIONS=halt_on_error=1 ctest --output-on-failure -L concurrency -j 2
	@$(MAKE) --no-print-directory skipped-tests DIR=$(TSAN_DIR)

# gcovr 5.2 cannot parse GCC 12's "branch ... taken -1" lines: they are skipped, so read the
# table's line figures, not its branch figures.
coverage: ## Line coverage of src/ by every test: an unoptimised --coverage build in build-cov/, ctest, gcovr's table (build-cov/coverage.txt)
	@./scripts/install-deps.sh --coverage
	cmake -S . -B $(COV_DIR) -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG='-O0 --coverage' \
	  -DCMAKE_EXE_LINKER_FLAGS=--coverage $(CMAKE_FLAGS)
	cmake --build $(COV_DIR) -j $(JOBS)
	find $(COV_DIR) -name '*.gcda' -delete
	cd $(COV_DIR) && ctest --output-on-failure -j 2
	gcovr -r . $(COV_DIR) --filter 'src/' --gcov-ignore-parse-errors -j $(JOBS) \
	  --txt $(COV_DIR)/coverage.txt 2>/dev/null
	@tail -n 2 $(COV_DIR)/coverage.txt

# ctest shows a binary whose tests passed as passed, though some skipped themselves (a tmpfs the
# runner may not mount, say): each such test is named, with its reason in the log.
skipped-tests:
	@grep -hE '^\[  SKIPPED \] [^ ]+$$' $(DIR)/Testing/Temporary/LastTest.log | \
	  sort -u | sed 's/^/skipped (see $(DIR)\/Testing\/Temporary\/LastTest.log): /' || true

lint: $(BUILD_DIR)/CMakeCache.txt ## clang-tidy (.clang-tidy) over src/ and tools/, in parallel
	run-clang-tidy -p $(BUILD_DIR) -quiet -j $(JOBS) -extra-arg=-Wno-unknown-warning-option '$(CURDIR)/(src|tools)/.*\.cpp$$'

lint-check: format-check shellcheck ## Checks CI runs: formatting and shell scripts

format: ## Format every C++ source in place
	clang-format -i $(SOURCES)

format-check: ## Fail when a source is not clang-formatted
	clang-format --dry-run --Werror $(SOURCES)

shellcheck: ## Lint the shell scripts
	shellcheck $$(git ls-files '*.sh') .ci/run

typecheck: ## Strictest compile (warnings as errors) plus cppcheck
	cmake -S . -B build-typecheck -DCMAKE_BUILD_TYPE=Debug -DNBU_WERROR=ON -DNBU_BUILD_BENCH=ON \
	  -DCMAKE_DISABLE_PRECOMPILE_HEADERS=ON $(CMAKE_FLAGS)
	cmake --build build-typecheck -j $(JOBS)
	cppcheck --project=build-typecheck/compile_commands.json --enable=warning,performance,portability \
	  --error-exitcode=1 --inline-suppr --suppress=missingIncludeSystem -i tests/ -i build-typecheck/ --quiet -j $(JOBS)

clean: dev-down ## Stop the local Azurite; remove build directories and runtime data (data/ too)
	rm -rf $(BUILD_DIR) $(ASAN_DIR) $(TSAN_DIR) $(COV_DIR) build-typecheck $(RUN_DIR) data

dev-up: ## Start a local Azurite in the background on 127.0.0.1:AZURITE_PORT (default 10000)
	@./scripts/dev-azurite.sh start $(AZURITE_PORT)

dev-down: ## Stop the local Azurite
	@./scripts/dev-azurite.sh stop $(AZURITE_PORT)

# scripts/api.sh takes the API's port and token from the environment, else from .env (as the
# service does), unless API=http://host:port is given.
watch-start: ## Start watching incoming/SESSION (port and APP_HTTP_TOKEN from the environment or .env)
	@API='$(API)' ./scripts/api.sh POST /v1/watch/start '{"session_name":"$(SESSION)"}'

watch-stop: ## Stop the active watch session (port and token as for watch-start)
	@API='$(API)' ./scripts/api.sh POST /v1/watch/stop

test-status: ## Pretty-printed status of the uploader (and the generator, if running)
	@echo "uploader:"; out=$$(API='$(API)' ./scripts/api.sh GET /v1/status) && jq . <<<"$$out" || \
	  echo "  (not reachable)"
	@echo "generator:"; out=$$(curl -sS --noproxy '*' --max-time 2 $(GEN_API)/v1/generate/status 2>/dev/null) && \
	  jq . <<<"$$out" || echo "  (not running)"

# --- Containers, test file generator, Kubernetes (docs/deploy.md, docs/testgen.md) ---
COMPOSE ?= docker compose

docker-build: ## Build the uploader and generator images (docker/*.Dockerfile)
	$(COMPOSE) build

docker-up: ## Start the Compose stack: app :8000, Azurite :10000, OTel Collector :4317/4318, test-nfs :8080
	@conn="$${APP_AZURE_CONNECTION_STRING:-$$(sed -nE '1s/^\xEF\xBB\xBF//; s/^[[:space:]]*(export[[:space:]]+)?APP_AZURE_CONNECTION_STRING[[:space:]]*=//p' .env 2>/dev/null | tail -n 1)}"; \
	case "$$(printf '%s' "$$conn" | tr 'A-Z' 'a-z')" in *://127.*|*://localhost|*://localhost[!a-z0-9.-]*|*://\[::1\]*) \
	  echo "docker-up: APP_AZURE_CONNECTION_STRING (from the shell or ./.env, as make run writes it) names 127.0.0.1 or localhost, which the app container cannot reach: unset it, or move ./.env aside (docs/deploy.md)" >&2; \
	  exit 1;; \
	esac
	$(COMPOSE) up -d --build

docker-down: ## Stop the Compose stack (add V=1 to also delete its volumes)
	$(COMPOSE) down $(if $(V),--volumes,)

gen-start: ## Generate COUNT files of SIZE bytes every INTERVAL s into incoming/SESSION (COUNT=0: until gen-stop)
	@curl -sS --noproxy '*' --fail-with-body -X POST -H 'Content-Type: application/json' \
	  -d '{"session_name":"$(SESSION)","interval_s":$(INTERVAL),"size_bytes":$(SIZE),"count":$(COUNT)}' \
	  $(GEN_API)/v1/generate/start && echo

gen-stop: ## Stop the running generation
	@curl -sS --noproxy '*' --fail-with-body -X POST -d '' $(GEN_API)/v1/generate/stop && echo

k3s-apply: ## Apply the Kubernetes manifests in k8s/ (PV, PVC, ServiceAccount, Deployment, PDB, Service)
	kubectl apply -f k8s/

k3s-delete: ## Delete what k3s-apply created (the data on the NFS export stays)
	kubectl delete --ignore-not-found -f k8s/

# --- Benchmarks (bench/run.sh, bench/scale.sh; figures and method in bench/RESULTS.md) ---
BENCH_OUT := $(RUN_DIR)/bench
BENCH_REPEAT ?= 3

bench: install-bench build-bin ## Service vs rclone vs AzCopy (Azurite + nginx sink), scan and latency; rewrites bench/RESULTS.md (~10 min)
	@mkdir -p $(BENCH_OUT)
	OUT=$(BENCH_OUT)/run.md REPEAT=$(BENCH_REPEAT) bench/run.sh
	OUT=$(BENCH_OUT)/scale.md bench/scale.sh
	bench/update-results.sh $(BENCH_OUT)/run.md $(BENCH_OUT)/scale.md

bench-micro: install ## Hashing micro-benchmarks (OpenSSL MD5, one Md5Pair, 2-4 pairs in one pass, CRC-64) on one thread; then idle-gap costs
	cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=Release -DNBU_BUILD_BENCH=ON $(CMAKE_FLAGS)
	cmake --build $(BUILD_DIR) -j $(JOBS) --target md5_bench idle_gap
	$(BUILD_DIR)/bin/md5_bench --benchmark_min_time=1
	$(BUILD_DIR)/bin/idle_gap

bench-smoke: install build-bin ## Short bench (< 60 s): every tool finishes and every file arrives intact; no timing checks
	SCALE=smoke bench/run.sh
