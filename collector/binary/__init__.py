"""Binary column files: the trades of each symbol as fixed-width little-endian columns
that readers can map (``MD`` and ``TRADES`` tables, one file per column and UTC day).

Modules: :mod:`.columns` (the columns and how stored events become rows), :mod:`.files`
(the files: layout, crash-consistent appends, rotation at midnight UTC), :mod:`.export`
(the ``export-binary`` command: the same files from the Parquet files). The live outlet
that writes them as the service runs is :mod:`collector.outlets.binary`.
"""
