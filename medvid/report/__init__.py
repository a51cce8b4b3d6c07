"""The self-contained ``report.html`` of ``medvid evaluate``."""
