"""An unmodified flamepy 0.6.0 service, launched by a real node agent as an application instance.

Used by chaos-tests/tests/cluster/a_flamepy_service_under_a_real_agent_serves_a_flamepy_client.rs, whose
client script (flamepy_echo_client.py) registers it with the venv's python as the command.

- on_session_enter keeps the session's common data.
- on_task_invoke returns common data + input; the input b"explode" raises a ValueError whose
  text names the task, so the task fails with that text.
- on_session_leave writes "<session id> <tasks invoked>" to the file named by the application
  environment variable ECHO_LEAVE_MARKER (written aside and renamed, so a reader never sees half a
  marker).
"""

import os

import flamepy

POISON = b"explode"


class Echo(flamepy.FlameService):
    def __init__(self):
        self.common = b""
        self.session_id = "never entered"
        self.invoked = 0

    def on_session_enter(self, context):
        self.common = context.common_data() or b""
        self.session_id = context.session_id
        print(f"entered session {self.session_id} with common data {self.common!r}", flush=True)

    def on_task_invoke(self, context):
        self.invoked += 1
        print(f"task {context.task_id}: input {context.input!r}", flush=True)
        if context.input == POISON:
            raise ValueError(f"echo service refuses task {context.task_id}: input {POISON!r} is poison")
        return self.common + (context.input or b"")

    def on_session_leave(self):
        marker = os.environ["ECHO_LEAVE_MARKER"]
        with open(marker + ".part", "w") as out:
            out.write(f"{self.session_id} {self.invoked}")
        os.rename(marker + ".part", marker)
        print(f"left session {self.session_id} after {self.invoked} tasks", flush=True)


if __name__ == "__main__":
    flamepy.run(Echo())
