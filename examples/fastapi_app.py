"""FastAPI: a dependency resolves the user from the bearer token, keeps it on request.state
and tells Sentry.

Run it:

    pip install sentry-segment fastapi uvicorn
    sentry-segment listen &          # a local Segment collector: one line per message
    export SENTRY_SEGMENT_HOST=http://127.0.0.1:8765 SENTRY_SEGMENT_WRITE_KEY=anyKey
    export SENTRY_DSN=http://public@127.0.0.1:8766/1   # yours, or sentry-segment listen's
    python examples/fastapi_app.py                     # serves on 127.0.0.1:8000 (PORT=...)
    curl -H 'Authorization: Bearer token-of-42' http://127.0.0.1:8000/checkout
    # 500, and "Error Captured" for user 42
"""

from __future__ import annotations

import os

import sentry_sdk
import uvicorn
from fastapi import Depends, FastAPI, Header, HTTPException, Request

from sentry_segment import SegmentIntegration

sentry_sdk.init(dsn=os.environ.get("SENTRY_DSN"), integrations=[SegmentIntegration()])

app = FastAPI()


def current_user(request: Request, authorization: str = Header(default="")) -> str:
    token = authorization.removeprefix("Bearer ").strip()
    if not token.startswith("token-of-"):
        raise HTTPException(status_code=401, detail="sign in first")
    user_id = token.removeprefix("token-of-")
    request.state.user_id = user_id
    sentry_sdk.set_user({"id": user_id})
    return user_id


@app.get("/checkout")
def checkout(user_id: str = Depends(current_user)) -> dict[str, str]:
    raise ValueError(f"the payment provider declined user {user_id}'s card")


if __name__ == "__main__":
    uvicorn.run(
        app, host="127.0.0.1", port=int(os.environ.get("PORT", "8000")), log_level="warning"
    )
