"""Register a function with the SDK and run it on the local endpoint (after `fnserve up`)."""

from fnserve import Client, RemoteExecutionError


def energy(masses, velocities):
    """Kinetic energy of a set of particles."""
    return sum(0.5 * m * v * v for m, v in zip(masses, velocities))


def main() -> None:
    fc = Client()
    endpoint_id = next(e["endpoint_id"] for e in fc.list_endpoints() if e["status"].get("connected"))
    fid = fc.register_function(energy)
    task_id = fc.run(fid, endpoint_id, [1.0, 2.0], [3.0, 4.0])
    print("task", task_id, "->", fc.get_result(task_id, timeout=60))

    batch = fc.create_batch()
    for scale in range(1, 6):
        batch.add(fid, endpoint_id, args=([1.0] * scale, [2.0] * scale))
    ids = fc.batch_run(batch)
    print("batch:", [r["result"] for r in fc.get_batch_result(ids, timeout=60).values()])

    try:
        fc.call(fid, endpoint_id, [1.0], None)  # zip(None) raises TypeError remotely
    except RemoteExecutionError as exc:
        print("remote error:", exc.remote_type, "-", exc.remote_message)


if __name__ == "__main__":
    main()
