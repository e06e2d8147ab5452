"""A site for tests/flower_grid.py: reads Flower-serialised messages on stdin, runs fedmic's ClientApp
on each in a freshly forked process (nothing survives a message but the site's disk), writes the
serialised reply on stdout. The first frame is (node id, node config)."""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from flwr.app import Context, Error, Message, RecordDict  # noqa: E402
from flwr.common.constant import ErrorCode  # noqa: E402

from fedmic.flower.client_app import app  # noqa: E402  (imported once: each fork starts warm)
from flower_grid import pack, read_frame, send_frame, unpack  # noqa: E402


def main() -> None:
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    node_id, node_config = read_frame(stdin)
    while (frame := read_frame(stdin)) is not None:
        child = os.fork()
        if child == 0:
            msg = unpack(*frame)
            context = Context(run_id=1, node_id=node_id, node_config=node_config, state=RecordDict(), run_config={})
            try:
                reply = app(message=msg, context=context)
            except Exception as e:  # as Flower's runtime: the server gets the error, the site lives on
                reply = Message(Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, f"{type(e).__name__}: {e}"), reply_to=msg)
            send_frame(stdout, pack(reply))
            os._exit(0)
        _, status = os.waitpid(child, 0)
        if status != 0:
            sys.exit(f"message handler exited with status {status}")


if __name__ == "__main__":
    main()
