"""Symbols added and removed while the service runs (``SIGHUP``, the admin API).

- :mod:`collector.control.changes`: the difference between two settings, in pairs;
- :mod:`collector.control.controller`: applies one to the running connections.
"""
