"""A FastAPI notes app whose background task reuses the route's ``get_db`` dependency."""
