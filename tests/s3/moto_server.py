"""A local S3 server for the tests: moto in server mode on 127.0.0.1, a run-time port,
holding the sample mesh.

    python tests/s3/moto_server.py BUCKET DATA_DIR

Uploads every Parquet file (and Delta log) under DATA_DIR to BUCKET (same relative paths), creates an IAM
user whose key is the only one accepted from then on (moto checks signatures once
authentication is switched on), prints one line

    ready http://127.0.0.1:PORT ACCESS_KEY_ID SECRET_ACCESS_KEY

and serves until its stdin closes (the test that started it is gone).
"""

import os
import json
import pathlib
import socket
import sys

import boto3
from moto import settings
from moto.core.authorization import ActionAuthenticatorMixin
from moto.server import ThreadedMotoServer


def main():
    bucket, data = sys.argv[1], pathlib.Path(sys.argv[2])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    setup = dict(endpoint_url=url, region_name="us-east-1",
                 aws_access_key_id="setup", aws_secret_access_key="setup")

    iam = boto3.client("iam", **setup)
    iam.create_user(UserName="meshgate")
    iam.put_user_policy(
        UserName="meshgate", PolicyName="read-mesh",
        PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}),
    )
    key = iam.create_access_key(UserName="meshgate")["AccessKey"]

    s3 = boto3.client("s3", **setup)
    s3.create_bucket(Bucket=bucket)
    # The layout as served: a published location is a link to a hidden folder beside it.
    for root, dirs, files in os.walk(data, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        # A Delta table's log travels with its files.
        in_log = pathlib.Path(root).name == "_delta_log"
        for name in sorted(n for n in files if n.endswith(".parquet") or in_log):
            f = pathlib.Path(root) / name
            s3.upload_file(str(f), bucket, f.relative_to(data).as_posix())

    # From now on every request must be signed with an existing key (the server runs in
    # this process: moto's /moto-api/reset-auth does the same from outside).
    settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
    ActionAuthenticatorMixin.request_count = 0

    print(f"ready {url} {key['AccessKeyId']} {key['SecretAccessKey']}", flush=True)
    sys.stdin.read()
    server.stop()


if __name__ == "__main__":
    main()
