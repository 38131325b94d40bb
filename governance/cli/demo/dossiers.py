"""The demo's last words: the auditor downloads the evidence dossiers of the rolled-back
version and of the deployment over the story, verifies both offline, and says where they are."""

from __future__ import annotations

from pathlib import Path

import httpx

from governance.audit.signing import load_public_key, public_path_for
from governance.cli.demo.state import DEPLOYMENT, DemoFailed, DemoState, say
from governance.dossier.verify import verify_dossier


def write_dossiers(st: DemoState) -> None:
    version = st.versions["safer"]  # gated, approved, promoted, then rolled back by the monitor
    pub = load_public_key(public_path_for(Path(st.env["GOVERN_SIGNING_KEY_PATH"])))
    written = []
    for path, out in ((f"/v1/versions/{version}/dossier", st.work / f"dossier-version-{version}.pdf"),
                      (f"/v1/deployments/{DEPLOYMENT}/dossier", st.work / f"dossier-deployment-{DEPLOYMENT}.pdf")):
        res = httpx.get(f"{st.api_url}{path}", params={"format": "pdf"}, timeout=300,
                        headers={"Authorization": f"Bearer {st.users.auditor}"})
        if res.status_code != 200:
            raise DemoFailed(f"GET {path} answered {res.status_code}: {res.text[:200]}")
        out.write_bytes(res.content)
        check = verify_dossier(out, public_key=pub)
        if not check.ok:
            raise DemoFailed(f"the dossier {out} does not verify: {check.summary()}")
        written.append(out)
        say(st, f"evidence dossier ({check.facts} facts, verified offline): {out}")
    st.numbers["dossiers"] = ", ".join(p.name for p in written)
