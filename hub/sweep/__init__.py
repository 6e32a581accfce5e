"""hub sweep: every (model, quantize mode) through hub convert on a Dask cluster."""
