"""Files: atomic writes, safe reads that name the file, and progress where people wait."""
