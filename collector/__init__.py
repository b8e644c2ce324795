"""collector: records real-time crypto market data into crash-safe Parquet files."""

__version__ = "0.1.0"
