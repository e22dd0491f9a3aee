"""The ``--engine`` of ``extract`` and ``annotate`` (:class:`Engine`), and Ray for ``--engine
ray`` (the ``ray`` extra): connect to a cluster or start a local instance, find its dashboard.

``address``: ``None`` starts a local Ray instance for the run (and stops it after);
``auto`` joins the cluster this machine belongs to (``ray start --head`` / ``ray start
--address``); ``HOST:PORT`` or ``ray://HOST:PORT`` joins that one. A process already
connected (a test's ``ray.init``) keeps its connection and it is left open.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType

from maple_data.errors import MissingExtra
from maple_data.settings import setting

ENGINES = ("local", "ray")


def require_ray() -> ModuleType:
    """The ``ray`` module, or a :class:`MissingExtra` that says how to install it."""
    try:
        import ray
    except ImportError:
        raise MissingExtra("--engine ray needs Ray: pip install 'maple-omni[ray]' (on every node of the cluster)") \
            from None
    return ray


@dataclass(frozen=True)
class RaySession:
    """A connection: the cluster's address and its dashboard URL (None without the
    dashboard, e.g. plain ``ray`` without ``ray[default]``)."""

    address: str
    dashboard_url: str | None

    def cpus(self) -> int:
        """CPUs of the whole cluster (all nodes), at least 1."""
        return max(1, int(require_ray().cluster_resources().get("CPU", 1)))


@contextmanager
def ray_session(address: str | None = None, *, num_cpus: int | None = None) -> Iterator[RaySession]:
    """Connect to Ray (see the module docstring); ``num_cpus`` sizes a local instance.
    On exit, disconnect (a local instance stops) unless the connection was already open."""
    ray = require_ray()
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, num_cpus=num_cpus if address is None else None, log_to_driver=False,
                 configure_logging=False)
    try:
        url = _dashboard_url(ray)
        yield RaySession(ray.get_runtime_context().gcs_address, f"http://{url}" if url else None)
    finally:
        if started:
            ray.shutdown()


@dataclass(frozen=True)
class Engine:
    """Where ``extract`` and ``annotate`` run (``--engine`` and its options)."""

    name: str = setting("local", help="local: processes on this machine; ray: Ray tasks on the CPUs of a Ray "
                                      "cluster (docs/cluster.md; needs the ray extra).")
    ray_address: str | None = setting(None, help="--engine ray: the cluster to join: auto (the one `ray start` made "
                                                 "on this machine), HOST:PORT or ray://HOST:PORT; default: start a "
                                                 "local Ray instance.")
    workers: int = setting(1, help="Worker processes (--engine ray: CPUs of the local Ray instance).")
    actors: int = setting(1, help="--engine ray: model actors, each holding one copy of the model.")
    actor_gpus: float = setting(0, help="--engine ray: GPUs per model actor (0: on CPUs).")

    def __post_init__(self) -> None:
        if self.name not in ENGINES:
            raise ValueError(f"unknown engine {self.name!r}; choose {' or '.join(ENGINES)}")

    @property
    def ray(self) -> bool:
        return self.name == "ray"

    @contextmanager
    def session(self, say: Callable[[str], None]) -> Iterator[None]:
        """With ``ray``, one Ray session for the whole command (a local instance of
        max(workers, actors) CPUs when ``ray_address`` is None), its address and dashboard
        told to ``say``; with ``local``, nothing."""
        if not self.ray:
            yield
            return
        with ray_session(self.ray_address, num_cpus=max(self.workers, self.actors)) as session:
            say(f"Ray cluster at {session.address}, {session.cpus()} CPU(s)"
                + (f"; dashboard: {session.dashboard_url}" if session.dashboard_url else ""))
            yield


def _dashboard_url(ray: ModuleType) -> str | None:
    """The dashboard's ``host:port`` of the connected cluster (None: no dashboard)."""
    try:
        return ray._private.worker.get_dashboard_url() or None
    except Exception:  # noqa: BLE001 - a URL is a courtesy, never a reason to fail
        return None
