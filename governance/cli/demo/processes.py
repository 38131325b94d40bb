"""Step 1 of the demo, the processes: the API, two Celery workers, beat, the deployment and
two serving replicas, each a supervised ``govern`` subprocess. The replicas load the model
in the background, beside the training of step 2; the promotion of step 4 waits for them."""

from __future__ import annotations

import time

from governance.cli.demo.people import create_service_account
from governance.cli.demo.policy import demo_policy
from governance.cli.demo.state import DEPLOYMENT, DemoState, say
from governance.cli.procs import Managed, ProcessGroup, free_port

# One torch thread per process: the processes share two cores, and oversubscribed
# torch threads spin against each other (decoding ran 10x slower that way).
ONE_THREAD = ["--torch-threads", "1"]
API_READY_S = 90
REPLICA_READY_S = 240


def start_processes(st: DemoState) -> None:
    assert st.procs is not None
    st.procs.env.update(st.env)
    with st.console.status("starting the API, two Celery workers and beat"):
        _start_services(st, st.procs)
        with st.client(st.users.admin) as admin:
            policy = demo_policy(st.fast)
            admin.create_deployment(DEPLOYMENT, base_model="smollm2-135m-instruct", policy=policy)
        create_service_account(st)  # the replicas' key, bound to the deployment just created
    # Both replicas load the model now, while the tokens train; the first step that needs them
    # (the promotion) waits until each answers /readyz (`ensure_replicas`).
    st.loading_replicas = [_start_replica(st.procs, i + 1) for i in range(2)]
    say(st, f"API {st.api_url} · deployment '{DEPLOYMENT}' (policy policies/demo.yaml) · "
            f"two serving replicas loading the model: {', '.join(u for _, u in st.loading_replicas)}")


def ensure_replicas(st: DemoState) -> list[str]:
    """Wait until every replica started in step 1 answers /readyz (once); their URLs."""
    assert st.procs is not None
    if st.loading_replicas:
        t0 = time.monotonic()
        for managed, url in st.loading_replicas:
            st.procs.wait_ready(managed, REPLICA_READY_S)
            st.replica_urls.append(url)
        st.loading_replicas = []
        say(st, f"replicas ready: {', '.join(st.replica_urls)} (waited {time.monotonic() - t0:.0f} s)")
    return st.replica_urls


def _start_services(st: DemoState, procs: ProcessGroup) -> None:
    """The API, the workers and beat start together; the API must then answer /readyz."""
    port = int(st.api_url.rsplit(":", 1)[1])
    api = procs.start("api", ["api", "--port", str(port)], ready_url=f"{st.api_url}/readyz", wait=False)
    # gates on one worker, monitoring and rollback on another, so a long gate never
    # delays a drift check (each scales out the same way: more workers per queue).
    procs.start("worker-gates", ["worker", "--queues", "gates", "--concurrency", "2", *ONE_THREAD])
    procs.start("worker-monitoring", ["worker", "--queues", "monitoring,rollback", "--concurrency", "1", *ONE_THREAD])
    procs.start("beat", ["beat"])
    procs.wait_ready(api, API_READY_S)


def _start_replica(procs: ProcessGroup, number: int) -> tuple[Managed, str]:
    """Start serving replica ``demo-<number>`` without waiting for it; the child and its URL."""
    rport = free_port()
    url = f"http://127.0.0.1:{rport}"
    managed = procs.start(f"replica-{number}", ["serve", "--deployment", DEPLOYMENT, "--port", str(rport),
                                                "--replica-id", f"demo-{number}", "--reconcile-interval", "2",
                                                *ONE_THREAD],
                          ready_url=f"{url}/readyz", wait=False)
    return managed, url
