"""Who owns and closes what: the one lifecycle convention of LiveCalc Mesh.

1. **Whoever creates a resource closes it.** A channel, a pool, a store, a file, a thread: the
   object or function that constructs it is the one that closes it, and nothing else does.
2. **What is injected is borrowed.** A resource passed in (a registry, a storage backend, a
   channel, a clock) is used, never closed, by the receiver; its docstring says so when it matters
   ("the caller closes `storage`"). Handing a resource on *for good* (a `build()` returning
   the clean-up of what it made) is a transfer of ownership and is said as one.
3. **Close is idempotent.** ``close()``/``aclose()`` may be called twice (a signal during a
   test's own stop, a stop after a failed start) and the second call does nothing; an object
   used after close fails loudly rather than touching released memory.
4. **Servers compose resources with an `contextlib.AsyncExitStack`.** Each resource is pushed
   the moment it exists, so an error half-way through assembly closes what was already made,
   newest first, and a clean stop closes everything in the reverse order of creation (what a
   resource depends on outlives it). Assembly ends with ``owned = stack.pop_all()``: the
   server's stop then awaits ``owned.aclose()`` (which is idempotent, per 3).

    async def build(...) -> ServiceParts:
        async with AsyncExitStack() as stack:
            pool = WasmPool(...)
            stack.callback(pool.close)
            reader = RowReader(...)
            stack.push_async_callback(reader.close)
            servicer = EngineServicer(pool, reader)    # borrows both
            owned = stack.pop_all()                    # nothing failed: ownership moves on
        return ServiceParts(bindings=[...], on_stop=[owned.aclose])

Where it is applied: services.common.server (the server's own audit log and metrics endpoint,
and the services' stop hooks), services.engine.server and services.data.server (`build`).
"""
