module ftkit.test/gorender

go 1.19
