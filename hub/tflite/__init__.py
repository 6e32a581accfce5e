"""The converted flatbuffer: read, patched by passes, reordered for the least arena, compressed."""
