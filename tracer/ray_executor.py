"""A sweep's points as Ray tasks (`tracer sweep --executor ray [--address ray://HOST:PORT]`): on a local Ray
instance of `jobs` CPUs when no address is given, or on an existing cluster. Each point is one task; the driver
gathers the results as they finish, keeps them in its own cache, and records a point whose task failed in one line,
as the process pool does. A worker whose libraries or tracer source differ from the driver's (its results would
not be the driver's) fails its points with a line saying so.

Ray is an optional extra: pip install -e '.[ray]' on the driver and on every worker of a cluster, with the same
tracer checkout and jax versions.
"""

import logging
import warnings

from base.inputs import ConfigError
from tracer.errors import Interrupted, one_line


def _signalled(err: SystemError) -> BaseException:
    """What the sweep's SIGINT or SIGTERM handler raised inside Ray's own wait, which wraps it in a SystemError (the
    SystemError itself where there is none)."""
    cause = err.__cause__ or err.__context__
    return cause if isinstance(cause, Interrupted) else err


def run(tasks: list, jobs: int, env: dict, address: str | None, remote, done):
    """Each task (fn, args) as a Ray task remote(fn, args) -> (the worker's versions, fn(*args)). done(k, result)
    records the k-th task's result, {"error": ...} for a task that failed. On any exit but a normal one, the tasks
    left are cancelled; a Ray instance started here is shut down."""
    try:
        import ray
    except ImportError:
        raise ConfigError("--executor ray needs Ray: pip install -e '.[ray]' (here, and on every worker of a "
                          "cluster)") from None
    started = not ray.is_initialized()
    if started:
        try:
            with warnings.catch_warnings():  # jax warns of any fork; Ray's is a fork and exec of its own processes
                warnings.filterwarnings("ignore", message="os.fork", category=RuntimeWarning)
                ray.init(address=address, num_cpus=None if address else jobs, include_dashboard=False,
                         log_to_driver=False, logging_level=logging.ERROR, configure_logging=True)
        except (ConnectionError, ValueError, RuntimeError) as err:
            raise ConfigError(f"--address {address}: cannot reach a Ray cluster there ({' '.join(str(err).split())}"
                              "); give ray://HOST:PORT of a running head node, or leave --address out for a local "
                              "instance") from None
    task = ray.remote(num_cpus=1, max_retries=0)(remote)
    refs = {task.remote(fn, args): k for k, (fn, args) in enumerate(tasks)}
    pending = list(refs)
    try:
        while pending:
            try:
                (ref,), pending = ray.wait(pending, num_returns=1)
            except SystemError as err:
                raise _signalled(err) from None
            try:
                versions, result = ray.get(ref)
                if versions != env:
                    differ = sorted(k for k in env if env.get(k) != versions.get(k))
                    result = {"error": f"the Ray worker's {', '.join(differ)} differ from the driver's: install the "
                                       "same tracer checkout and libraries on every worker"}
            except Interrupted:
                raise
            except SystemError as err:
                raise _signalled(err) from None
            except Exception as err:  # a task that died: recorded in one line, the sweep goes on
                result = {"error": one_line(err)}
            done(refs[ref], result)
    except BaseException:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    finally:
        if started:
            ray.shutdown()
