"""flamepy 0.6.0, unmodified, against a cache that serves TLS.

Run by chaos-tests with FLAME_CACHE_ENDPOINT=grpcs://host:port and FLAME_CA_FILE naming the CA
that signed the cache's certificate. Puts, reads, updates and deletes an object; the ObjectRef
must name the cache as grpc+tls://. Prints "flamepy tls cache scenario passed" at the end; any
failure raises, so the process exits non-zero with a traceback.
"""

from flamepy.cache import ObjectRef, delete_objects, get_object, put_object, update_object

ref = put_object("tlsapp/s1", {"model": "m", "tools": ["a", "b"]})
assert ref.endpoint.startswith("grpc+tls://"), ref.endpoint
assert get_object(ref) == {"model": "m", "tools": ["a", "b"]}
updated = update_object(ref, {"model": "n"})
assert get_object(ObjectRef(endpoint=updated.endpoint, key=updated.key, version=0)) == {"model": "n"}
delete_objects("tlsapp/s1")
try:
    get_object(ObjectRef(endpoint=ref.endpoint, key=ref.key, version=0))
except Exception as e:  # the object is gone: flamepy raises on NOT_FOUND
    print(f"deleted: {type(e).__name__}")
else:
    raise AssertionError("the object survived its session's delete")
print("flamepy tls cache scenario passed")
