"""ka.image: a golden machine captured once into an image directory, verified at rest, and
deployed any time through the live clone's own sessions (`ka clone --image`)."""
