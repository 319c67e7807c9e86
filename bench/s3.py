"""A minimal S3 client for the benchmarks (Python standard library only): SigV4-signed
requests with an unsigned payload, streaming bodies in both directions, path-style URLs."""

import datetime
import hashlib
import hmac
import http.client
import urllib.parse
import xml.etree.ElementTree as ElementTree

CHUNK = 1024 * 1024


def _sign(key, text):
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


class S3:
    def __init__(self, endpoint, access_key, secret_key, region="us-east-1"):
        url = urllib.parse.urlparse(endpoint)
        self.host, self.port = url.hostname, url.port or 80
        self.access_key, self.secret_key, self.region = access_key, secret_key, region

    def _headers(self, method, path, extra):
        now = datetime.datetime.now(datetime.timezone.utc)
        stamp, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
        headers = {"host": f"{self.host}:{self.port}", "x-amz-content-sha256": "UNSIGNED-PAYLOAD",
                   "x-amz-date": stamp, **{k.lower(): str(v) for k, v in extra.items()}}
        names = sorted(headers)
        canonical = "\n".join([method, urllib.parse.quote(path), "",
                               "".join(f"{n}:{headers[n]}\n" for n in names), ";".join(names),
                               "UNSIGNED-PAYLOAD"])
        scope = f"{day}/{self.region}/s3/aws4_request"
        to_sign = "\n".join(["AWS4-HMAC-SHA256", stamp, scope,
                             hashlib.sha256(canonical.encode()).hexdigest()])
        key = _sign(_sign(_sign(_sign(("AWS4" + self.secret_key).encode(), day), self.region), "s3"),
                    "aws4_request")
        signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        headers["authorization"] = (f"AWS4-HMAC-SHA256 Credential={self.access_key}/{scope}, "
                                    f"SignedHeaders={';'.join(names)}, Signature={signature}")
        return headers

    def _request(self, method, path, body=None, length=None):
        extra = {"content-length": length} if length is not None else {}
        connection = http.client.HTTPConnection(self.host, self.port, timeout=600)
        connection.request(method, path, body=body, headers=self._headers(method, path, extra))
        return connection, connection.getresponse()

    def _check(self, response, what):
        if response.status >= 300:
            self._check_status(response.status, response.read(), what)

    def create_bucket(self, bucket):
        connection, response = self._request("PUT", f"/{bucket}", b"", 0)
        response.read()
        connection.close()
        if response.status >= 300 and response.status != 409:
            raise RuntimeError(f"S3 create bucket: {response.status}")

    def delete_bucket(self, bucket):
        """Deletes every object of `bucket`, then the bucket; a bucket never created is fine."""
        while True:
            connection, response = self._request("GET", f"/{bucket}")
            # The listing's first page (up to 1000 keys); the loop lists again until none remain.
            body = response.read()
            connection.close()
            if response.status == 404:
                return
            self._check_status(response.status, body, f"list {bucket}")
            keys = [element.text for element in ElementTree.fromstring(body).iter()
                    if element.tag.endswith("}Key") or element.tag == "Key"]
            if not keys:
                break
            for key in keys:
                connection, response = self._request("DELETE", f"/{bucket}/{key}")
                self._check_status(response.status, response.read(), f"DELETE {key}")
                connection.close()
        connection, response = self._request("DELETE", f"/{bucket}")
        self._check_status(response.status, response.read(), f"DELETE bucket {bucket}")
        connection.close()

    def _check_status(self, status, body, what):
        if status >= 300:
            raise RuntimeError(f"S3 {what}: {status} {body[:300]!r}")

    def put_file(self, bucket, key, path, size):
        with open(path, "rb") as body:
            connection, response = self._request("PUT", f"/{bucket}/{key}", body, size)
            self._check(response, f"PUT {key}")
            response.read()
            connection.close()

    def copy_via_client(self, bucket, source, target):
        """GET `source` and stream it into a PUT of `target` (the plain copy baseline)."""
        get_connection, got = self._request("GET", f"/{bucket}/{source}")
        self._check(got, f"GET {source}")
        size = int(got.getheader("content-length"))

        def chunks():
            while True:
                chunk = got.read(CHUNK)
                if not chunk:
                    return
                yield chunk

        connection, response = self._request("PUT", f"/{bucket}/{target}", chunks(), size)
        self._check(response, f"PUT {target}")
        response.read()
        connection.close()
        get_connection.close()
        return size
