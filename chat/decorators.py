from django.contrib.auth.decorators import user_passes_test


def _is_staff(user) -> bool:
    return user.is_active and user.is_staff


# The pages are for staff; anyone else is sent to the login page.
staff_required = user_passes_test(_is_staff)
