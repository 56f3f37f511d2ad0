"""The paper's tables: scores, efficiency, gradient variance, captions and rendering."""
