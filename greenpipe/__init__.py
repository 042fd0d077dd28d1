"""greenpipe: CNNs from data to measured, energy-efficient int8 deployments.

The library is pure logic; ``tasks/`` holds one module per DVC stage and
``flows/`` the Prefect flows that compose them.  See docs/architecture.md.
"""

__version__ = "0.1.0"
