"""Create the periodic tasks declared in settings.PERIODIC_TASKS that django-celery-beat lacks.

`migrate` does the same after every run; this command is for a database restored without them, or
to see what is missing. It never changes a task that exists (an operator's edit in admin stays).
"""

from core.commands import BaseCommand
from core.schedules import periodic_tasks_sync


class Command(BaseCommand):
    help = "Create the periodic tasks of settings.PERIODIC_TASKS missing from Celery beat; edit none."

    def handle(self, *args, **options):
        created = periodic_tasks_sync()
        if created:
            self.stdout.write(f"Created {len(created)} periodic task(s): {', '.join(created)}")
        else:
            self.stdout.write("Every declared periodic task exists; none was changed.")
