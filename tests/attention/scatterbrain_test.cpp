#include <gtest/gtest.h>
TEST(ScatterBrain, Placeholder) {}
