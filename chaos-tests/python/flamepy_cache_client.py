"""flamepy 0.6.0, unmodified, using the object cache of a Flame cluster through a follower.

Run by chaos-tests (against the multi-process harness) and by flmctl's local-up test with:
- FLAME_ENDPOINT: a follower's client API; FLAME_CACHE_ENDPOINT: one node's cache (unset:
  flamepy finds it in ~/.flame/flame.yaml);
- CACHE_OTHER_ENDPOINT: another node's cache (the same one on a one-node cluster);
- CACHE_PYTHON, CACHE_SERVICE, CACHE_WORKDIR: the venv's python, flamepy_context_service.py and
  the application's working directory;
- CACHE_APP: the application name; CACHE_BIG_MIB: size of the big round trip (0 skips it).

Prints "step: ..." before each step and "flamepy cache scenario passed" at the end, and the big
round trip's rates as "rate: ..." lines; any failure raises, so the process exits non-zero with
a traceback naming the step. Every wait is bounded.
"""

import os
import sys
import time
from importlib.metadata import version

import flamepy
from flamepy import ApplicationAttributes, SessionState
from flamepy.cache import ObjectRef, delete_objects, get_object, patch_object, put_object, update_object
from flamepy.service import Session as ServiceSession

STEP_TIMEOUT = 60


def step(name):
    print(f"step: {name}", flush=True)


def fresh(ref, endpoint=None):
    """The same object, read without the client-side copy (version 0), through `endpoint`."""
    return ObjectRef(endpoint=endpoint or ref.endpoint, key=ref.key, version=0)


def gone(ref):
    try:
        get_object(fresh(ref))
    except Exception as e:  # flamepy surfaces Flight's NOT_FOUND as an Arrow error
        assert "not found" in str(e).lower(), repr(e)
        return True
    return False


def objects(app, other):
    step("put an object through one node's cache and read it back")
    ref = put_object(f"{app}/objects", {"n": 1, "text": "first"})
    assert ref.key.startswith(f"{app}/objects/") and ref.version == 1, ref
    expected = os.environ.get("FLAME_CACHE_ENDPOINT", os.environ["CACHE_OTHER_ENDPOINT"])
    assert ref.endpoint == expected, ref
    assert get_object(ref) == {"n": 1, "text": "first"}

    step("read it through another node's cache")
    assert get_object(fresh(ref, other)) == {"n": 1, "text": "first"}

    step("update replaces the object and bumps its version")
    ref = update_object(ref, {"n": 2})
    assert ref.version == 2, ref
    assert get_object(ref) == {"n": 2}
    assert get_object(fresh(ref, other)) == {"n": 2}

    step("patches append deltas; a deserializer sees base and deltas in order")
    combine = lambda base, deltas: (base, deltas)  # noqa: E731
    ref = patch_object(ref, "a")
    ref = patch_object(ref, "b")
    assert ref.version == 4, ref
    assert get_object(ref, deserializer=combine) == ({"n": 2}, ["a", "b"])

    step("an incremental get after one more patch fetches only what is new")
    ref = patch_object(ref, "c")
    assert get_object(ref, deserializer=combine) == ({"n": 2}, ["a", "b", "c"])
    assert get_object(fresh(ref, other), deserializer=combine) == ({"n": 2}, ["a", "b", "c"])

    step("delete_objects of the session removes the object on every cache")
    delete_objects(f"{app}/objects")
    assert gone(ref) and gone(fresh(ref, other)), "the object is still served"

    step("bad keys are refused by the client with a named error")
    try:
        put_object(f"{app}/../escape", b"x")
        raise AssertionError("a key with '..' was accepted")
    except ValueError as e:
        assert "invalid" in str(e), e


def big_round_trip(app, mib):
    step(f"round trip of a {mib} MiB object")
    blob = os.urandom(1 << 20) * mib
    started = time.monotonic()
    ref = put_object(f"{app}/big", blob)
    put_s = time.monotonic() - started
    started = time.monotonic()
    back = get_object(fresh(ref))
    get_s = time.monotonic() - started
    assert back == blob, "the big object came back different"
    print(f"rate: put {mib / put_s:.1f} MiB/s, get {mib / get_s:.1f} MiB/s", flush=True)
    delete_objects(f"{app}/big")


def register(app):
    step("register the service-context application")
    attrs = ApplicationAttributes(
        command=os.environ["CACHE_PYTHON"],
        arguments=["-u", os.environ["CACHE_SERVICE"]],
        working_directory=os.environ["CACHE_WORKDIR"],
        description="flamepy service context (chaos-tests)",
    )
    flamepy.register_application(app, attrs)


def service_context(app):
    register(app)
    step("a service session's context is an object in the cache, read by the instance")
    session = ServiceSession(name=app, ctx={"greeting": "hello", "history": []})
    first = session.invoke("alpha")
    assert first == {"greeting": "hello", "history": ["alpha"]}, first

    step("the instance's update_context is seen by the next task and by the client")
    second = session.invoke("beta")
    assert second == {"greeting": "hello", "history": ["alpha", "beta"]}, second
    context = session.context()
    assert context == {"greeting": "hello", "history": ["alpha", "beta"]}, context
    session_id = session.id()
    ref = ObjectRef.decode(flamepy.get_session(session_id).common_data())
    assert ref.key.startswith(f"{app}/{session_id}/"), ref

    step("closing the session deletes its objects on every cache")
    session.close()
    assert flamepy.get_session(session_id).state == SessionState.CLOSED
    deadline = time.monotonic() + STEP_TIMEOUT
    while not gone(ref):
        assert time.monotonic() < deadline, "the closed session's context is still served"
        time.sleep(0.2)


def main():
    print(f"flamepy {version('flamepy')} against {os.environ['FLAME_ENDPOINT']}", flush=True)
    assert version("flamepy") == "0.6.0"
    app = os.environ["CACHE_APP"]
    objects(app, os.environ["CACHE_OTHER_ENDPOINT"])
    mib = int(os.environ.get("CACHE_BIG_MIB", "0"))
    if mib:
        big_round_trip(app, mib)
    service_context(f"{app}-svc")
    print("flamepy cache scenario passed", flush=True)


if __name__ == "__main__":
    try:
        main()
    except BaseException:
        import traceback

        traceback.print_exc()
        sys.stdout.flush()
        os._exit(1)
    sys.stdout.flush()
    os._exit(0)
