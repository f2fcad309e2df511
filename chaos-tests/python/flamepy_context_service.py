"""An unmodified flamepy 0.6.0 service-context service (flamepy.service.FlameInstance).

Launched by a real node agent for flamepy_cache_client.py. Each task appends its request to the
session's context, an object in the node's cache that the client created (the session's
common_data is its ObjectRef), writes the context back with update_context, and returns what it
saw. The instance reads the cache through FLAME_CACHE_ENDPOINT, which its agent sets.
"""

from flamepy.service import FlameInstance

instance = FlameInstance()


@instance.entrypoint
def remember(request):
    context = instance.context()
    context["history"].append(request)
    instance.update_context(context)
    return {"greeting": context["greeting"], "history": list(context["history"])}


if __name__ == "__main__":
    instance.run()
