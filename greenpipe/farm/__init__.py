"""The device farm's plumbing that runs outside the pipeline stages: loopback servers for the local stack.

``greenpipe.farm.s3server`` starts a real S3-compatible server (``rclone serve s3``) on 127.0.0.1 so that
artifacts and results travel through S3 on a laptop exactly as they do between a build host and device hosts.
"""
