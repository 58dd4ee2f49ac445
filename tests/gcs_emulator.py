"""A local Google Cloud Storage for the tests: `python tests/gcs_emulator.py PORT BUCKET` serves, in memory,
gcp-storage-emulator on 127.0.0.1:PORT, patched for what tensorstore (orbax's arrays, OCDBT) and gcsfs ask:

* object reads carry the `x-goog-generation` header, and `ifGenerationMatch` / `ifGenerationNotMatch` are
  honoured on reads, uploads and deletes (upstream ignores them: OCDBT reads fail with "Malformed
  StorageGeneration");
* object listings honour `startOffset` / `endOffset` (upstream lists every object);
* `objects.move` exists (upstream answers 501, and gcsfs retries for 30 s before copying).

`CLIENT_ENV` points each library at it: etils.epath through fsspec/gcsfs (TensorFlow's own GCS filesystem
has no endpoint setting, so clu's TensorBoard writer cannot use the emulator), tensorstore, and
google-cloud-cpp inside array_record.
"""

import json
import sys
from http import HTTPStatus

from gcp_storage_emulator import server
from gcp_storage_emulator.exceptions import NotFound
from gcp_storage_emulator.handlers import objects


def client_env(url: str) -> dict[str, str]:
  """Environment variables that send every library's gs:// traffic to the emulator at `url`."""
  return {"EPATH_USE_TF": "0", "STORAGE_EMULATOR_HOST": url, "FSSPEC_GCS_TOKEN": "anon",
          "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",  # else a 60 s gRPC probe per bucket
          "TENSORSTORE_GCS_HTTP_URL": url, "CLOUD_STORAGE_EMULATOR_ENDPOINT": url}


def _query(request, key):
  values = request.query.get(key)
  return values[0] if values else None


def _stored(storage, bucket, name):
  try:
    return storage.get_file_obj(bucket, name)
  except NotFound:
    return None


def _precondition_failed(request, response, storage, is_read) -> bool:
  bucket, name = (request.params or {}).get("bucket_name"), (request.params or {}).get("object_id")
  name = name or _query(request, "name")
  match, not_match = _query(request, "ifGenerationMatch"), _query(request, "ifGenerationNotMatch")
  if not bucket or not name or (match is None and not_match is None):
    return False
  stored = _stored(storage, bucket, name)
  generation = stored["generation"] if stored else "0"
  if match is not None and str(match) != generation:
    response.status = HTTPStatus.NOT_FOUND if is_read and stored is None else HTTPStatus.PRECONDITION_FAILED
    return True
  if not_match is not None and str(not_match) == generation:
    response.status = HTTPStatus.NOT_MODIFIED if is_read else HTTPStatus.PRECONDITION_FAILED
    if stored is not None:
      response["x-goog-generation"] = generation
    return True
  return False


def _with_preconditions(handler, is_read, generation_headers=False):
  def wrapped(request, response, storage, *args, **kwargs):
    if _precondition_failed(request, response, storage, is_read):
      return None
    result = handler(request, response, storage, *args, **kwargs)
    if generation_headers and response.status in (HTTPStatus.OK, HTTPStatus.PARTIAL_CONTENT):
      stored = _stored(storage, request.params["bucket_name"], request.params["object_id"])
      if stored is not None:
        response["x-goog-generation"] = stored["generation"]
        response["x-goog-metageneration"] = stored["metageneration"]
        response["x-goog-stored-content-length"] = str(stored["size"])
    return result
  return wrapped


def _with_offsets(handler):
  def wrapped(request, response, storage, *args, **kwargs):
    result = handler(request, response, storage, *args, **kwargs)
    start, end = _query(request, "startOffset"), _query(request, "endOffset")
    if (start or end) and isinstance(response._content, str) and response._content.startswith("{"):
      listing = json.loads(response._content)
      keep = lambda name: (start is None or name >= start) and (end is None or name < end)
      listing["items"] = [item for item in listing.get("items", []) if keep(item["name"])]
      listing["prefixes"] = [prefix for prefix in listing.get("prefixes", []) if keep(prefix)]
      response._content = json.dumps(listing)
    return result
  return wrapped


def _move(request, response, storage, *args, **kwargs):
  bucket, source, target = (request.params[k] for k in ("bucket_name", "object_id", "dest_object_id"))
  try:
    moved = objects._copy(request.base_url, storage, bucket, source, bucket, target)
    storage.delete_file(bucket, source)
    response.json(moved)
  except NotFound:
    response.status = HTTPStatus.NOT_FOUND


def _patch() -> None:
  replacements = {objects.download: _with_preconditions(objects.download, True, generation_headers=True),
                  objects.get: _with_preconditions(objects.get, True),
                  objects.insert: _with_preconditions(objects.insert, False),
                  objects.delete: _with_preconditions(objects.delete, False),
                  objects.ls: _with_offsets(objects.ls)}
  for _, handlers in server.HANDLERS:
    for method, handler in list(handlers.items()):
      handlers[method] = replacements.get(handler, handler)
  objects.download = replacements[objects.download]  # `objects.get` with alt=media calls it
  move = r"/b/(?P<bucket_name>[-.\w]+)/o/(?P<object_id>.*[^/]+)/moveTo/o/(?P<dest_object_id>.*[^/]+)$"
  server.HANDLERS = tuple((rf"^{prefix}{move}", {"POST": _move})
                          for prefix in (server.settings.API_ENDPOINT, "")) + tuple(server.HANDLERS)


if __name__ == "__main__":
  _patch()
  port, bucket = int(sys.argv[1]), sys.argv[2]
  server.create_server("127.0.0.1", port, in_memory=True, default_bucket=bucket).run()
