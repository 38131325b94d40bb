"""Step 4 of the demo: four-eyes review (the engineer may not approve their own version), the first
promotion, and the approval of the second version."""

from __future__ import annotations

from governance.cli.demo.replicas import wait_replicas
from governance.cli.demo.state import DEPLOYMENT, DemoFailed, DemoState, say
from governance.client import ApiError


def review_and_promote(st: DemoState) -> None:
    house, safer = st.versions["house"], st.versions["safer"]
    with st.client(st.users.officer) as off, st.client(st.users.engineer) as eng:
        # a gate that passed with waivers (bounds the bare base breaks too) needs each acknowledged by name
        waived = off.pending_waivers(house)
        off.approve(house, "Gate evidence reviewed: format adherence up, no reasoning regression.", waived)
        say(st, f"officer approved version {house}"
                + (f", acknowledging the waivers {', '.join(waived)}" if waived else ""))
        try:
            eng.approve(safer, "I trained it, it is fine.")
        except ApiError as exc:
            say(st, f"engineer approving their own version {safer}: refused ({exc.status}): {exc.message}")
        else:
            raise DemoFailed("the engineer could approve their own version")
        g1 = eng.promote(DEPLOYMENT, house)["generation"]
        say(st, f"engineer promoted version {house}: generation {g1}")
        wait_replicas(st, g1)
        off.approve(safer, "Refusals on unsafe prompts improved; benign answers unchanged.",
                    off.pending_waivers(safer))
        say(st, f"officer approved version {safer}; before any user sees it, the engineer shadows it (next step)")
