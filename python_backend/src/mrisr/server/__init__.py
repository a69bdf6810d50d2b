"""`mrisr serve`: the backend over HTTP, so the CLI, the console and the Slicer module can enhance on a
remote GPU machine.

- `app`: the FastAPI routes (`create_app(ServerConfig)`), bearer-token auth and upload limits;
- `jobs`: the bounded job queue, one worker process per GPU (or N CPU workers), TTL clean-up;
- `worker`: the worker process, which runs `mrisr.pipeline.enhance_file` on one job folder at a time;
- `uploads`: streamed multipart uploads written only inside the job folder under server-chosen names;
- `client`: `ServerClient` and `enhance_remote_file`, the same progress callbacks and cancel token as
  the local pipeline;
- `commands`: the `mrisr serve` parser and `mrisr enhance --server`.

Only `commands` and `config` import without the `server` extra (fastapi, uvicorn, python-multipart,
httpx).
"""
