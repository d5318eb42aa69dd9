"""The GUI's pages and panels: widgets only; what they show comes from the models and controllers."""
