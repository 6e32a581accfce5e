"""Presentation: portability report sections and every renderer (terminal, text, Markdown, HTML, charts)."""
